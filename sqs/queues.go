package sqs

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// SQS's queue attribute ranges (the endpoint keeps them even where quorumq
// is more generous, so SDK validation and the server agree).
const (
	maxDelaySeconds      = 900
	minMessageSize       = 1024
	maxMessageSize       = 1 << 20 // SQS raised its limit from 256 KiB to 1 MiB in 2025
	minRetentionSeconds  = 60
	maxRetentionSeconds  = 1209600
	maxWaitSeconds       = 20
	maxVisibilitySeconds = 43200
	maxReceiveCount      = 1000
	listPageSize         = 1000
)

// queueURL is the URL of a tenant's queue as this endpoint serves it.
func (c *call) queueURL(name string) string {
	return c.h.cfg.Scheme + "://" + c.host + "/" + url.PathEscape(c.tenant) + "/" + url.PathEscape(name)
}

// queueArn is arn:aws:sqs:<region>:<account>:<queue>, the account being
// the tenant.
func (c *call) queueArn(name string) string {
	return "arn:aws:sqs:" + c.h.cfg.Region + ":" + c.tenant + ":" + name
}

// queueName resolves the QueueUrl of a request (or, for the Query
// protocol, the request path) to a queue of the caller's tenant. A queue
// of another account does not exist for the caller.
func (c *call) queueName(queueURL string) (string, error) {
	p := queueURL
	if p == "" {
		if c.jsonAPI || c.path == "" || c.path == "/" {
			return "", errMissingParameter("QueueUrl")
		}
		p = c.path
	} else if u, err := url.Parse(queueURL); err == nil && u.Path != "" {
		p = u.EscapedPath()
	}
	parts := strings.Split(strings.Trim(p, "/"), "/")
	if len(parts) != 2 {
		return "", errQueueDoesNotExist()
	}
	account, err1 := url.PathUnescape(parts[0])
	name, err2 := url.PathUnescape(parts[1])
	if err1 != nil || err2 != nil || account != c.tenant || name == "" {
		return "", errQueueDoesNotExist()
	}
	return name, nil
}

// arnQueue resolves a queue ARN of the caller's tenant to a queue name.
func (c *call) arnQueue(param, arn string) (string, error) {
	parts := strings.Split(arn, ":")
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "sqs" || parts[5] == "" {
		return "", errInvalidParameter("Value %s for parameter %s is invalid. Reason: not an SQS queue ARN.", arn, param)
	}
	if parts[4] != c.tenant {
		return "", errQueueDoesNotExist()
	}
	return parts[5], nil
}

type createQueueIn struct {
	QueueName  string
	Attributes map[string]string
	Tags       map[string]string
}

type queueURLOut struct {
	QueueUrl string //nolint:revive // SQS's member name
}

func createQueue(c *call, in []byte) (any, error) {
	var req createQueueIn
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	if req.QueueName == "" {
		return nil, errMissingParameter("QueueName")
	}
	fifo := strings.HasSuffix(req.QueueName, ".fifo")
	attrs, paths, err := c.parseQueueAttributes(req.Attributes, fifo)
	if err != nil {
		return nil, err
	}
	if v, ok := req.Attributes["FifoQueue"]; ok && (v == "true") != fifo {
		return nil, errInvalidParameter("The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.")
	}
	attrs.Fifo = fifo
	// SQS answers an existing queue's URL when the given attributes match
	// its own (attributes not given are not compared).
	if got, err := c.h.cfg.Client.GetQueue(c.ctx, &qv1.GetQueueRequest{Name: req.QueueName}); err == nil {
		if diff := differing(got.GetQueue(), attrs, paths); diff != "" {
			return nil, errQueueNameExists("A queue already exists with the same name and a different value for attribute " + diff)
		}
		return queueURLOut{c.queueURL(req.QueueName)}, nil
	}
	if _, err := c.h.cfg.Client.CreateQueue(c.ctx, &qv1.CreateQueueRequest{Name: req.QueueName, Attributes: attrs, Tags: req.Tags}); err != nil {
		return nil, err
	}
	return queueURLOut{c.queueURL(req.QueueName)}, nil
}

// differing names the first attribute of paths whose value in want is not
// the queue's; "" when they all agree.
func differing(q *qv1.Queue, want *qv1.QueueAttributes, paths []string) string {
	have := q.GetAttributes()
	for _, p := range paths {
		same := true
		switch p {
		case "visibility_timeout":
			same = have.GetVisibilityTimeout().AsDuration() == want.GetVisibilityTimeout().AsDuration()
		case "message_retention":
			same = have.GetMessageRetention().AsDuration() == want.GetMessageRetention().AsDuration()
		case "delivery_delay":
			same = have.GetDeliveryDelay().AsDuration() == want.GetDeliveryDelay().AsDuration()
		case "receive_wait":
			same = have.GetReceiveWait().AsDuration() == want.GetReceiveWait().AsDuration()
		case "max_message_size":
			same = have.GetMaxMessageSize() == want.GetMaxMessageSize()
		case "dead_letter":
			same = have.GetDeadLetter().GetQueue() == want.GetDeadLetter().GetQueue() &&
				have.GetDeadLetter().GetMaxReceiveCount() == want.GetDeadLetter().GetMaxReceiveCount()
		case "content_based_deduplication":
			same = have.GetContentBasedDeduplication() == want.GetContentBasedDeduplication()
		}
		if !same {
			return p
		}
	}
	return ""
}

// sqsAttrPaths maps SQS's settable attributes to QueueAttributes fields.
var sqsAttrPaths = map[string]string{
	"DelaySeconds":                  "delivery_delay",
	"MaximumMessageSize":            "max_message_size",
	"MessageRetentionPeriod":        "message_retention",
	"ReceiveMessageWaitTimeSeconds": "receive_wait",
	"VisibilityTimeout":             "visibility_timeout",
	"RedrivePolicy":                 "dead_letter",
	"ContentBasedDeduplication":     "content_based_deduplication",
}

// parseQueueAttributes turns SQS attributes into QueueAttributes and the
// field paths they set. Attributes quorumq has no home for are refused,
// except those whose only legal value is quorumq's behaviour.
func (c *call) parseQueueAttributes(in map[string]string, fifo bool) (*qv1.QueueAttributes, []string, error) {
	a := &qv1.QueueAttributes{}
	var paths []string
	seconds := func(name, v string, lo, hi int64) (*durationpb.Duration, error) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < lo || n > hi {
			return nil, errInvalidAttributeValue("Invalid value for the parameter %s. Reason: must be an integer from %d to %d.", name, lo, hi)
		}
		return durationpb.New(time.Duration(n) * time.Second), nil
	}
	for name, v := range in {
		var err error
		switch name {
		case "DelaySeconds":
			a.DeliveryDelay, err = seconds(name, v, 0, maxDelaySeconds)
		case "MessageRetentionPeriod":
			a.MessageRetention, err = seconds(name, v, minRetentionSeconds, maxRetentionSeconds)
		case "ReceiveMessageWaitTimeSeconds":
			a.ReceiveWait, err = seconds(name, v, 0, maxWaitSeconds)
		case "VisibilityTimeout":
			a.VisibilityTimeout, err = seconds(name, v, 0, maxVisibilitySeconds)
		case "MaximumMessageSize":
			n, perr := strconv.ParseInt(v, 10, 64)
			if perr != nil || n < minMessageSize || n > maxMessageSize {
				err = errInvalidAttributeValue("Invalid value for the parameter MaximumMessageSize. Reason: must be an integer from %d to %d.", minMessageSize, maxMessageSize)
			}
			a.MaxMessageSize = n
		case "RedrivePolicy":
			a.DeadLetter, err = c.parseRedrivePolicy(v)
		case "FifoQueue": // fixed by the name; CreateQueue checks they agree
			if v != "true" && v != "false" {
				return nil, nil, errInvalidAttributeValue("Invalid value for the parameter FifoQueue.")
			}
			continue
		case "ContentBasedDeduplication":
			if v != "true" && v != "false" {
				err = errInvalidAttributeValue("Invalid value for the parameter ContentBasedDeduplication.")
			} else if v == "true" && !fifo {
				err = errInvalidAttributeName(name)
			}
			a.ContentBasedDeduplication = v == "true"
		case "RedriveAllowPolicy", "DeduplicationScope", "FifoThroughputLimit", "SqsManagedSseEnabled":
			// No home in quorumq: accepted only with the value that is
			// quorumq's behaviour.
			if err := onlyValue(name, v, fifo); err != nil {
				return nil, nil, err
			}
			continue
		default:
			return nil, nil, errInvalidAttributeName(name)
		}
		if err != nil {
			return nil, nil, err
		}
		paths = append(paths, sqsAttrPaths[name])
	}
	return a, paths, nil
}

// onlyValue accepts an attribute quorumq has no setting for when its value
// is what quorumq does: any queue of the tenant may name a queue as its
// dead-letter queue (RedriveAllowPolicy allowAll); FIFO queues deduplicate
// and order per queue; nothing is encrypted at rest.
func onlyValue(name, v string, fifo bool) error {
	ok := false
	switch name {
	case "RedriveAllowPolicy":
		var p struct {
			RedrivePermission string `json:"redrivePermission"`
		}
		ok = json.Unmarshal([]byte(v), &p) == nil && p.RedrivePermission == "allowAll"
	case "DeduplicationScope":
		ok = fifo && v == "queue"
	case "FifoThroughputLimit":
		ok = fifo && v == "perQueue"
	case "SqsManagedSseEnabled":
		ok = v == "false"
	}
	if !ok {
		return errInvalidAttributeValue("Invalid value for the parameter %s: quorumq supports %s only.", name, supportedValue[name])
	}
	return nil
}

var supportedValue = map[string]string{
	"RedriveAllowPolicy":   `{"redrivePermission":"allowAll"}`,
	"DeduplicationScope":   "queue (FIFO queues)",
	"FifoThroughputLimit":  "perQueue (FIFO queues)",
	"SqsManagedSseEnabled": "false",
}

// parseRedrivePolicy reads {"deadLetterTargetArn": "arn:…", "maxReceiveCount": 5};
// "" removes the dead-letter queue.
func (c *call) parseRedrivePolicy(v string) (*qv1.DeadLetterPolicy, error) {
	if v == "" {
		return nil, nil
	}
	var p struct {
		DeadLetterTargetArn string `json:"deadLetterTargetArn"`
		MaxReceiveCount     num    `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(v), &p); err != nil || p.DeadLetterTargetArn == "" || !p.MaxReceiveCount.set {
		return nil, errInvalidParameter("Value %s for parameter RedrivePolicy is invalid. Reason: Redrive policy is not a valid JSON map with deadLetterTargetArn and maxReceiveCount.", v)
	}
	if p.MaxReceiveCount.v < 1 || p.MaxReceiveCount.v > maxReceiveCount {
		return nil, errInvalidParameter("Value %s for parameter RedrivePolicy is invalid. Reason: Invalid value for maxReceiveCount: %d, valid values are from 1 to %d both inclusive.", v, p.MaxReceiveCount.v, maxReceiveCount)
	}
	dlq, err := c.arnQueue("RedrivePolicy", p.DeadLetterTargetArn)
	if err != nil {
		return nil, errInvalidParameter("Value %s for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist.", v)
	}
	return &qv1.DeadLetterPolicy{Queue: dlq, MaxReceiveCount: int32(p.MaxReceiveCount.v)}, nil
}

type getQueueURLIn struct {
	QueueName              string
	QueueOwnerAWSAccountId string //nolint:revive // SQS's member name
}

func getQueueURL(c *call, in []byte) (any, error) {
	var req getQueueURLIn
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	if req.QueueName == "" {
		return nil, errMissingParameter("QueueName")
	}
	if req.QueueOwnerAWSAccountId != "" && req.QueueOwnerAWSAccountId != c.tenant {
		return nil, errQueueDoesNotExist()
	}
	if _, err := c.h.cfg.Client.GetQueue(c.ctx, &qv1.GetQueueRequest{Name: req.QueueName}); err != nil {
		return nil, err
	}
	return queueURLOut{c.queueURL(req.QueueName)}, nil
}

type listQueuesIn struct {
	QueueNamePrefix string
	MaxResults      num
	NextToken       string
}

type listQueuesOut struct {
	QueueUrls []string `json:",omitempty" xml:"QueueUrl"` //nolint:revive // SQS's member name
	NextToken string   `json:",omitempty" xml:",omitempty"`
}

func listQueues(c *call, in []byte) (any, error) {
	var req listQueuesIn
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	size := int64(listPageSize)
	if req.MaxResults.set {
		if req.MaxResults.v < 1 || req.MaxResults.v > listPageSize {
			return nil, errInvalidParameter("Value %d for parameter MaxResults is invalid. Reason: must be between 1 and %d.", req.MaxResults.v, listPageSize)
		}
		size = req.MaxResults.v
	} else if req.NextToken != "" {
		return nil, errInvalidParameter("NextToken is only valid with MaxResults.")
	}
	resp, err := c.h.cfg.Client.ListQueues(c.ctx, &qv1.ListQueuesRequest{Prefix: req.QueueNamePrefix, PageSize: int32(size), PageToken: req.NextToken})
	if err != nil {
		return nil, err
	}
	out := listQueuesOut{}
	for _, q := range resp.GetQueues() {
		out.QueueUrls = append(out.QueueUrls, c.queueURL(q.GetName()))
	}
	if req.MaxResults.set {
		out.NextToken = resp.GetNextPageToken()
	}
	return out, nil
}

type queueURLIn struct {
	QueueUrl string //nolint:revive // SQS's member name
}

func deleteQueue(c *call, in []byte) (any, error) {
	name, err := c.decodeQueue(in, &queueURLIn{})
	if err != nil {
		return nil, err
	}
	_, err = c.h.cfg.Client.DeleteQueue(c.ctx, &qv1.DeleteQueueRequest{Name: name})
	return nil, err
}

func purgeQueue(c *call, in []byte) (any, error) {
	name, err := c.decodeQueue(in, &queueURLIn{})
	if err != nil {
		return nil, err
	}
	_, err = c.h.cfg.Client.PurgeQueue(c.ctx, &qv1.PurgeQueueRequest{Name: name})
	return nil, err
}

// queueURLer is a request naming its queue by URL.
type queueURLer interface{ queueURLField() string }

func (q *queueURLIn) queueURLField() string { return q.QueueUrl }

// decodeQueue decodes req and resolves its queue.
func (c *call) decodeQueue(in []byte, req queueURLer) (string, error) {
	if err := decode(in, req); err != nil {
		return "", err
	}
	return c.queueName(req.queueURLField())
}

type getQueueAttributesIn struct {
	queueURLIn
	AttributeNames []string
}

type attributesOut struct {
	Attributes attrMap `json:",omitempty" xml:"Attribute"`
}

// queueAttributeNames are the attributes GetQueueAttributes knows.
var queueAttributeNames = []string{
	"ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed", "ApproximateNumberOfMessagesNotVisible",
	"CreatedTimestamp", "LastModifiedTimestamp", "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "QueueArn",
	"ReceiveMessageWaitTimeSeconds", "VisibilityTimeout", "RedrivePolicy", "RedriveAllowPolicy",
	"FifoQueue", "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit", "SqsManagedSseEnabled",
}

func getQueueAttributes(c *call, in []byte) (any, error) {
	var req getQueueAttributesIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, n := range req.AttributeNames {
		switch {
		case n == "All":
			for _, k := range queueAttributeNames {
				want[k] = true
			}
		case slices.Contains(queueAttributeNames, n), n == "Policy",
			n == "KmsMasterKeyId", n == "KmsDataKeyReusePeriodSeconds":
			want[n] = true
		default:
			return nil, errInvalidAttributeName(n)
		}
	}
	resp, err := c.h.cfg.Client.GetQueue(c.ctx, &qv1.GetQueueRequest{Name: name})
	if err != nil {
		return nil, err
	}
	all := c.queueAttributes(resp.GetQueue())
	out := attributesOut{Attributes: attrMap{}}
	for k := range want {
		if v, ok := all[k]; ok {
			out.Attributes[k] = v
		}
	}
	return out, nil
}

// queueAttributes are a queue's SQS attributes.
func (c *call) queueAttributes(q *qv1.Queue) map[string]string {
	a := q.GetAttributes()
	secs := func(d *durationpb.Duration) string { return strconv.FormatInt(int64(d.AsDuration()/time.Second), 10) }
	out := map[string]string{
		"ApproximateNumberOfMessages":           strconv.FormatInt(q.GetStats().GetVisible(), 10),
		"ApproximateNumberOfMessagesNotVisible": strconv.FormatInt(q.GetStats().GetInFlight(), 10),
		"ApproximateNumberOfMessagesDelayed":    strconv.FormatInt(q.GetStats().GetDelayed(), 10),
		"CreatedTimestamp":                      strconv.FormatInt(q.GetCreatedAt().GetSeconds(), 10),
		"LastModifiedTimestamp":                 strconv.FormatInt(q.GetUpdatedAt().GetSeconds(), 10),
		"DelaySeconds":                          secs(a.GetDeliveryDelay()),
		"MaximumMessageSize":                    strconv.FormatInt(a.GetMaxMessageSize(), 10),
		"MessageRetentionPeriod":                secs(a.GetMessageRetention()),
		"QueueArn":                              c.queueArn(q.GetName()),
		"ReceiveMessageWaitTimeSeconds":         secs(a.GetReceiveWait()),
		"VisibilityTimeout":                     secs(a.GetVisibilityTimeout()),
		"RedriveAllowPolicy":                    `{"redrivePermission":"allowAll"}`,
		"SqsManagedSseEnabled":                  "false",
	}
	if dl := a.GetDeadLetter(); dl.GetQueue() != "" {
		b, _ := json.Marshal(map[string]any{"deadLetterTargetArn": c.queueArn(dl.GetQueue()), "maxReceiveCount": dl.GetMaxReceiveCount()})
		out["RedrivePolicy"] = string(b)
	}
	if a.GetFifo() {
		out["FifoQueue"] = "true"
		out["ContentBasedDeduplication"] = strconv.FormatBool(a.GetContentBasedDeduplication())
		out["DeduplicationScope"] = "queue"
		out["FifoThroughputLimit"] = "perQueue"
	}
	return out
}

type setQueueAttributesIn struct {
	queueURLIn
	Attributes map[string]string
}

func setQueueAttributes(c *call, in []byte) (any, error) {
	var req setQueueAttributesIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	if len(req.Attributes) == 0 {
		return nil, errMissingParameter("Attribute.1.Name")
	}
	q, err := c.h.cfg.Client.GetQueue(c.ctx, &qv1.GetQueueRequest{Name: name})
	if err != nil {
		return nil, err
	}
	fifo := q.GetQueue().GetAttributes().GetFifo()
	if v, ok := req.Attributes["FifoQueue"]; ok && (v == "true") != fifo {
		return nil, errInvalidAttributeValue("Invalid value for the parameter FifoQueue: a queue's FIFO-ness is fixed at creation.")
	}
	attrs, paths, err := c.parseQueueAttributes(req.Attributes, fifo)
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, nil
	}
	_, err = c.h.cfg.Client.UpdateQueue(c.ctx, &qv1.UpdateQueueRequest{Name: name, Attributes: attrs,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
	return nil, err
}

type listQueueTagsOut struct {
	Tags tagMap `json:",omitempty" xml:"Tag"`
}

func listQueueTags(c *call, in []byte) (any, error) {
	name, err := c.decodeQueue(in, &queueURLIn{})
	if err != nil {
		return nil, err
	}
	resp, err := c.h.cfg.Client.GetQueue(c.ctx, &qv1.GetQueueRequest{Name: name})
	if err != nil {
		return nil, err
	}
	return listQueueTagsOut{Tags: resp.GetQueue().GetTags()}, nil
}

type listDLQSourcesIn struct {
	queueURLIn
	MaxResults num
	NextToken  string
}

type listDLQSourcesOut struct {
	QueueUrls []string `json:"queueUrls" xml:"QueueUrl"` //nolint:revive // SQS's member name
	NextToken string   `json:",omitempty" xml:",omitempty"`
}

// maxListPages bounds the scan of ListDeadLetterSourceQueues (the tenant's
// queue quota keeps it far below).
const maxListPages = 100

func listDeadLetterSourceQueues(c *call, in []byte) (any, error) {
	var req listDLQSourcesIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	if _, err := c.h.cfg.Client.GetQueue(c.ctx, &qv1.GetQueueRequest{Name: name}); err != nil {
		return nil, err
	}
	size := int64(listPageSize)
	if req.MaxResults.set {
		if req.MaxResults.v < 1 || req.MaxResults.v > listPageSize {
			return nil, errInvalidParameter("Value %d for parameter MaxResults is invalid. Reason: must be between 1 and %d.", req.MaxResults.v, listPageSize)
		}
		size = req.MaxResults.v
	}
	after := ""
	if req.NextToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(req.NextToken)
		if err != nil {
			return nil, errInvalidParameter("Invalid NextToken.")
		}
		after = string(b)
	}
	out := listDLQSourcesOut{QueueUrls: []string{}}
	token := ""
	for page := 0; page < maxListPages; page++ {
		resp, err := c.h.cfg.Client.ListQueues(c.ctx, &qv1.ListQueuesRequest{PageSize: listPageSize, PageToken: token})
		if err != nil {
			return nil, err
		}
		for _, q := range resp.GetQueues() {
			if q.GetName() <= after || q.GetAttributes().GetDeadLetter().GetQueue() != name {
				continue
			}
			if int64(len(out.QueueUrls)) == size {
				if req.MaxResults.set {
					last := out.QueueUrls[len(out.QueueUrls)-1]
					out.NextToken = base64.RawURLEncoding.EncodeToString([]byte(last[strings.LastIndex(last, "/")+1:]))
				}
				return out, nil
			}
			out.QueueUrls = append(out.QueueUrls, c.queueURL(q.GetName()))
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	return out, nil
}

type tagQueueIn struct {
	queueURLIn
	Tags map[string]string
}

func tagQueue(c *call, in []byte) (any, error) {
	var req tagQueueIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	if len(req.Tags) == 0 {
		return nil, errMissingParameter("Tags")
	}
	_, err = c.h.cfg.Client.UpdateQueue(c.ctx, &qv1.UpdateQueueRequest{Name: name, Tags: req.Tags,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"tags"}}})
	return nil, err
}

type untagQueueIn struct {
	queueURLIn
	TagKeys []string
}

func untagQueue(c *call, in []byte) (any, error) {
	var req untagQueueIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	if len(req.TagKeys) == 0 {
		return nil, errMissingParameter("TagKeys")
	}
	_, err = c.h.cfg.Client.UpdateQueue(c.ctx, &qv1.UpdateQueueRequest{Name: name, RemoveTags: req.TagKeys,
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"tags"}}})
	return nil, err
}
