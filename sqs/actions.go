package sqs

// actions are the SQS actions served, by name. Each decodes its request
// from the JSON document both protocols produce and returns its result
// (nil: an empty one).
var actions = map[string]func(c *call, in []byte) (any, error){
	"CreateQueue":                  createQueue,
	"GetQueueUrl":                  getQueueURL,
	"ListQueues":                   listQueues,
	"GetQueueAttributes":           getQueueAttributes,
	"SetQueueAttributes":           setQueueAttributes,
	"DeleteQueue":                  deleteQueue,
	"PurgeQueue":                   purgeQueue,
	"SendMessage":                  sendMessage,
	"SendMessageBatch":             sendMessageBatch,
	"ReceiveMessage":               receiveMessage,
	"DeleteMessage":                deleteMessage,
	"DeleteMessageBatch":           deleteMessageBatch,
	"ChangeMessageVisibility":      changeMessageVisibility,
	"ChangeMessageVisibilityBatch": changeMessageVisibilityBatch,
	"ListQueueTags":                listQueueTags,
	"TagQueue":                     tagQueue,
	"UntagQueue":                   untagQueue,
	"ListDeadLetterSourceQueues":   listDeadLetterSourceQueues,
	"StartMessageMoveTask":         startMessageMoveTask,
	"ListMessageMoveTasks":         listMessageMoveTasks,
	"CancelMessageMoveTask":        cancelMessageMoveTask,
	"AddPermission":                unsupported,
	"RemovePermission":             unsupported,
}

// unsupported answers SQS actions quorumq has no model for: access is
// granted by credentials bound to a tenant and scopes, not queue policies.
func unsupported(c *call, _ []byte) (any, error) {
	return nil, errUnsupported(c.action + " is not supported: access to a tenant's queues is granted by its credentials and their scopes.")
}
