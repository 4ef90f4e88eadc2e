package sqs

import (
	"regexp"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// SQS's bounds on message calls.
const (
	maxBatchEntries    = 10
	maxBatchBytes      = maxMessageSize // all messages of a batch together
	maxReceiveMessages = 10
	maxAttemptIDChars  = 128
)

var batchIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)

type sendIn struct {
	Id                      string //nolint:revive // SQS's member name
	MessageBody             *string
	DelaySeconds            num
	MessageAttributes       map[string]msgAttrIn
	MessageSystemAttributes map[string]msgAttrIn
	MessageDeduplicationId  string //nolint:revive // SQS's member name
	MessageGroupId          string //nolint:revive // SQS's member name
}

type sendMessageIn struct {
	queueURLIn
	sendIn
}

type sendMessageOut struct {
	MD5OfMessageAttributes string `json:",omitempty" xml:",omitempty"`
	MD5OfMessageBody       string
	MessageId              string //nolint:revive // SQS's member name
	SequenceNumber         string `json:",omitempty" xml:",omitempty"`
}

// message is a validated send: the quorumq entry and its SQS checksums.
type message struct {
	entry   *qv1.SendMessageBatchEntry
	md5Body string
	md5Attr string
	size    int
}

// parseSend validates one message as SQS does and builds its entry.
func (c *call) parseSend(s *sendIn) (*message, error) {
	if s.MessageBody == nil || *s.MessageBody == "" {
		return nil, errMissingParameter("MessageBody")
	}
	body := *s.MessageBody
	if !validText(body) {
		return nil, errInvalidMessageContents("Invalid binary character in the message body: only #x9, #xA, #xD, #x20 to #xD7FF, #xE000 to #xFFFD and #x10000 to #x10FFFF are allowed.")
	}
	attrs, err := parseMessageAttributes("MessageAttributes", s.MessageAttributes)
	if err != nil {
		return nil, err
	}
	if _, err := parseMessageAttributes("MessageSystemAttributes", s.MessageSystemAttributes); err != nil {
		return nil, err
	}
	for n := range s.MessageSystemAttributes {
		if n != "AWSTraceHeader" {
			return nil, errInvalidParameter("Message system attribute name '%s' is invalid.", n)
		}
	}
	size := len(body) + attrsSize(attrs)
	if size > maxMessageSize {
		return nil, errInvalidParameter("One or more parameters are invalid. Reason: Message must be shorter than %d bytes.", maxMessageSize)
	}
	e := &qv1.SendMessageBatchEntry{Id: s.Id, Body: body, GroupId: s.MessageGroupId, DeduplicationId: s.MessageDeduplicationId}
	e.Attributes, e.Tags = toStored(attrs, c.h.cfg.TagsAttribute)
	if s.DelaySeconds.set {
		if s.DelaySeconds.v < 0 || s.DelaySeconds.v > maxDelaySeconds {
			return nil, errInvalidParameter("Value %d for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= %d.", s.DelaySeconds.v, maxDelaySeconds)
		}
		if s.DelaySeconds.v > 0 || s.MessageGroupId == "" { // FIFO queues take no per-message delay; 0 is no delay
			e.Delay = durationpb.New(time.Duration(s.DelaySeconds.v) * time.Second)
		}
	}
	return &message{entry: e, md5Body: md5Hex(body), md5Attr: md5OfAttributes(attrs), size: size}, nil
}

// sequenceNumber is a FIFO message's SequenceNumber (none on standard queues).
func sequenceNumber(groupID string, seq uint64) string {
	if groupID == "" {
		return ""
	}
	return strconv.FormatUint(seq, 10)
}

func sendMessage(c *call, in []byte) (any, error) {
	var req sendMessageIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	m, err := c.parseSend(&req.sendIn)
	if err != nil {
		return nil, err
	}
	e := m.entry
	resp, err := c.h.cfg.Client.SendMessage(c.ctx, &qv1.SendMessageRequest{Queue: name, Body: e.Body, Attributes: e.Attributes,
		Tags: e.Tags, Delay: e.Delay, GroupId: e.GroupId, DeduplicationId: e.DeduplicationId})
	if err != nil {
		return nil, err
	}
	return sendMessageOut{MD5OfMessageAttributes: m.md5Attr, MD5OfMessageBody: m.md5Body, MessageId: resp.GetMessageId(),
		SequenceNumber: sequenceNumber(e.GroupId, resp.GetSequence())}, nil
}

// batchErrorEntry is a failed entry of a batch.
type batchErrorEntry struct {
	Id          string //nolint:revive // SQS's member name
	SenderFault bool
	Code        string
	Message     string `json:",omitempty" xml:",omitempty"`
}

func entryError(id string, err error) batchErrorEntry {
	ae := asAPIError(err)
	return batchErrorEntry{Id: id, SenderFault: !ae.receiver, Code: ae.code, Message: ae.msg}
}

func failedEntry(f *qv1.BatchResultError) batchErrorEntry {
	code, sender := batchEntryError(f.GetCode(), f.GetReason(), f.GetMessage())
	return batchErrorEntry{Id: f.GetId(), SenderFault: sender, Code: code, Message: f.GetMessage()}
}

// checkBatch applies SQS's batch rules to the entries' ids.
func checkBatch(ids []string) error {
	if len(ids) == 0 {
		return errEmptyBatch()
	}
	if len(ids) > maxBatchEntries {
		return errTooManyEntries(len(ids))
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if !batchIDPattern.MatchString(id) {
			return errInvalidBatchEntryID(id)
		}
		if seen[id] {
			return errBatchIDsNotDistinct(id)
		}
		seen[id] = true
	}
	return nil
}

type sendBatchIn struct {
	queueURLIn
	Entries []sendIn
}

type sendBatchResultEntry struct {
	Id                     string //nolint:revive // SQS's member name
	MessageId              string //nolint:revive // SQS's member name
	MD5OfMessageBody       string
	MD5OfMessageAttributes string `json:",omitempty" xml:",omitempty"`
	SequenceNumber         string `json:",omitempty" xml:",omitempty"`
}

type sendBatchOut struct {
	Successful []sendBatchResultEntry `xml:"SendMessageBatchResultEntry"`
	Failed     []batchErrorEntry      `xml:"BatchResultErrorEntry"`
}

func sendMessageBatch(c *call, in []byte) (any, error) {
	var req sendBatchIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(req.Entries))
	for i := range req.Entries {
		ids[i] = req.Entries[i].Id
	}
	if err := checkBatch(ids); err != nil {
		return nil, err
	}
	out := sendBatchOut{Successful: []sendBatchResultEntry{}, Failed: []batchErrorEntry{}}
	byID := map[string]*message{}
	var entries []*qv1.SendMessageBatchEntry
	total := 0
	for i := range req.Entries {
		m, err := c.parseSend(&req.Entries[i])
		if err != nil {
			out.Failed = append(out.Failed, entryError(req.Entries[i].Id, err))
			continue
		}
		total += m.size
		byID[m.entry.Id] = m
		entries = append(entries, m.entry)
	}
	if total > maxBatchBytes {
		return nil, errBatchTooLong(total, maxBatchBytes)
	}
	if len(entries) == 0 {
		return out, nil
	}
	resp, err := c.h.cfg.Client.SendMessageBatch(c.ctx, &qv1.SendMessageBatchRequest{Queue: name, Entries: entries})
	if err != nil {
		return nil, err
	}
	for _, s := range resp.GetSuccessful() {
		m := byID[s.GetId()]
		if m == nil {
			continue
		}
		out.Successful = append(out.Successful, sendBatchResultEntry{Id: s.GetId(), MessageId: s.GetMessageId(), MD5OfMessageBody: m.md5Body,
			MD5OfMessageAttributes: m.md5Attr, SequenceNumber: sequenceNumber(m.entry.GroupId, s.GetSequence())})
	}
	for _, f := range resp.GetFailed() {
		out.Failed = append(out.Failed, failedEntry(f))
	}
	return out, nil
}

type receiveIn struct {
	queueURLIn
	AttributeNames              []string
	MessageSystemAttributeNames []string
	MessageAttributeNames       []string
	MaxNumberOfMessages         num
	VisibilityTimeout           num
	WaitTimeSeconds             num
	ReceiveRequestAttemptId     string //nolint:revive // SQS's member name
}

type messageOut struct {
	MessageId              string //nolint:revive // SQS's member name
	ReceiptHandle          string
	MD5OfBody              string
	Body                   string
	Attributes             attrMap    `json:",omitempty" xml:"Attribute"`
	MD5OfMessageAttributes string     `json:",omitempty" xml:",omitempty"`
	MessageAttributes      msgAttrMap `json:",omitempty" xml:"MessageAttribute"`
}

type receiveOut struct {
	Messages []messageOut `json:",omitempty" xml:"Message"`
}

// systemAttributeNames are the message system attributes a receive may ask for.
var systemAttributeNames = []string{"All", "SenderId", "SentTimestamp", "ApproximateReceiveCount",
	"ApproximateFirstReceiveTimestamp", "MessageGroupId", "SequenceNumber", "DeadLetterQueueSourceArn",
	"MessageDeduplicationId", "AWSTraceHeader", "SqsManagedSseEnabled"}

func receiveMessage(c *call, in []byte) (any, error) {
	var req receiveIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	r := &qv1.ReceiveMessagesRequest{Queue: name, MaxMessages: 1, ReceiveAttemptId: req.ReceiveRequestAttemptId}
	if req.MaxNumberOfMessages.set {
		if v := req.MaxNumberOfMessages.v; v < 1 || v > maxReceiveMessages {
			return nil, errInvalidParameter("Value %d for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and %d, if provided.", v, maxReceiveMessages)
		}
		r.MaxMessages = int32(req.MaxNumberOfMessages.v)
	}
	if req.VisibilityTimeout.set {
		if v := req.VisibilityTimeout.v; v < 0 || v > maxVisibilitySeconds {
			return nil, errInvalidParameter("Value %d for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and %d, if provided.", v, maxVisibilitySeconds)
		}
		r.VisibilityTimeout = durationpb.New(time.Duration(req.VisibilityTimeout.v) * time.Second)
	}
	if req.WaitTimeSeconds.set {
		if v := req.WaitTimeSeconds.v; v < 0 || v > maxWaitSeconds {
			return nil, errInvalidParameter("Value %d for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= %d, if provided.", v, maxWaitSeconds)
		}
		r.WaitTime = durationpb.New(time.Duration(req.WaitTimeSeconds.v) * time.Second)
	}
	if len(req.ReceiveRequestAttemptId) > maxAttemptIDChars {
		return nil, errInvalidParameter("Value for parameter ReceiveRequestAttemptId is invalid. Reason: at most %d characters.", maxAttemptIDChars)
	}
	sysNames := append(append([]string{}, req.AttributeNames...), req.MessageSystemAttributeNames...)
	for _, n := range sysNames {
		if !slices.Contains(systemAttributeNames, n) && !slices.Contains(queueAttributeNames, n) {
			return nil, errInvalidAttributeName(n)
		}
	}
	for _, n := range req.MessageAttributeNames {
		if n != "All" && n != ".*" && !validAttrName(n) && !(len(n) > 2 && validAttrName(n[:len(n)-2]) && n[len(n)-2:] == ".*") {
			return nil, errInvalidParameter("Value %s for parameter MessageAttributeName is invalid.", n)
		}
	}
	resp, err := c.h.cfg.Client.ReceiveMessages(c.ctx, r)
	if err != nil {
		return nil, err
	}
	out := receiveOut{}
	for _, m := range resp.GetMessages() {
		attrs := selectAttrs(fromStored(m.GetAttributes(), m.GetTags(), c.h.cfg.TagsAttribute), req.MessageAttributeNames)
		mo := messageOut{MessageId: m.GetMessageId(), ReceiptHandle: m.GetReceiptHandle(), MD5OfBody: md5Hex(m.GetBody()), Body: m.GetBody(),
			Attributes: c.systemAttributes(m, sysNames), MD5OfMessageAttributes: md5OfAttributes(attrs), MessageAttributes: toOut(attrs)}
		out.Messages = append(out.Messages, mo)
	}
	return out, nil
}

// systemAttributes are the message system attributes asked for.
func (c *call) systemAttributes(m *qv1.ReceivedMessage, names []string) attrMap {
	if len(names) == 0 {
		return nil
	}
	all := map[string]string{
		"SenderId":                c.tenant,
		"SentTimestamp":           strconv.FormatInt(m.GetSentAt().AsTime().UnixMilli(), 10),
		"ApproximateReceiveCount": strconv.Itoa(int(m.GetReceiveCount())),
	}
	if m.GetFirstReceivedAt() != nil {
		all["ApproximateFirstReceiveTimestamp"] = strconv.FormatInt(m.GetFirstReceivedAt().AsTime().UnixMilli(), 10)
	}
	if g := m.GetGroupId(); g != "" {
		all["MessageGroupId"] = g
		all["SequenceNumber"] = strconv.FormatUint(m.GetSequence(), 10)
	}
	if s := m.GetDeadLetterSource(); s != "" {
		all["DeadLetterQueueSourceArn"] = c.queueArn(s)
	}
	out := attrMap{}
	for _, n := range names {
		if n == "All" {
			return all
		}
		if v, ok := all[n]; ok {
			out[n] = v
		}
	}
	return out
}

type deleteIn struct {
	queueURLIn
	ReceiptHandle string
}

func deleteMessage(c *call, in []byte) (any, error) {
	var req deleteIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	if req.ReceiptHandle == "" {
		return nil, errMissingParameter("ReceiptHandle")
	}
	_, err = c.h.cfg.Client.DeleteMessage(c.ctx, &qv1.DeleteMessageRequest{Queue: name, ReceiptHandle: req.ReceiptHandle})
	return nil, err
}

type changeIn struct {
	queueURLIn
	ReceiptHandle     string
	VisibilityTimeout num
}

// visibility checks a ChangeMessageVisibility timeout.
func visibility(v num) (*durationpb.Duration, error) {
	if !v.set {
		return nil, errMissingParameter("VisibilityTimeout")
	}
	if v.v < 0 || v.v > maxVisibilitySeconds {
		return nil, errInvalidParameter("Value %d for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and %d.", v.v, maxVisibilitySeconds)
	}
	return durationpb.New(time.Duration(v.v) * time.Second), nil
}

func changeMessageVisibility(c *call, in []byte) (any, error) {
	var req changeIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return nil, err
	}
	if req.ReceiptHandle == "" {
		return nil, errMissingParameter("ReceiptHandle")
	}
	d, err := visibility(req.VisibilityTimeout)
	if err != nil {
		return nil, err
	}
	_, err = c.h.cfg.Client.ChangeMessageVisibility(c.ctx, &qv1.ChangeMessageVisibilityRequest{Queue: name, ReceiptHandle: req.ReceiptHandle, VisibilityTimeout: d})
	return nil, err
}

type handleEntry struct {
	Id                string //nolint:revive // SQS's member name
	ReceiptHandle     string
	VisibilityTimeout num
}

type handleBatchIn struct {
	queueURLIn
	Entries []handleEntry
}

type idEntry struct {
	Id string //nolint:revive // SQS's member name
}

type deleteBatchOut struct {
	Successful []idEntry         `xml:"DeleteMessageBatchResultEntry"`
	Failed     []batchErrorEntry `xml:"BatchResultErrorEntry"`
}

type changeBatchOut struct {
	Successful []idEntry         `xml:"ChangeMessageVisibilityBatchResultEntry"`
	Failed     []batchErrorEntry `xml:"BatchResultErrorEntry"`
}

func (c *call) decodeHandleBatch(in []byte) (string, *handleBatchIn, error) {
	var req handleBatchIn
	name, err := c.decodeQueue(in, &req)
	if err != nil {
		return "", nil, err
	}
	ids := make([]string, len(req.Entries))
	for i, e := range req.Entries {
		ids[i] = e.Id
	}
	return name, &req, checkBatch(ids)
}

func deleteMessageBatch(c *call, in []byte) (any, error) {
	name, req, err := c.decodeHandleBatch(in)
	if err != nil {
		return nil, err
	}
	out := deleteBatchOut{Successful: []idEntry{}, Failed: []batchErrorEntry{}}
	var entries []*qv1.DeleteMessageBatchEntry
	for _, e := range req.Entries {
		if e.ReceiptHandle == "" {
			out.Failed = append(out.Failed, entryError(e.Id, errMissingParameter("ReceiptHandle")))
			continue
		}
		entries = append(entries, &qv1.DeleteMessageBatchEntry{Id: e.Id, ReceiptHandle: e.ReceiptHandle})
	}
	if len(entries) > 0 {
		resp, err := c.h.cfg.Client.DeleteMessageBatch(c.ctx, &qv1.DeleteMessageBatchRequest{Queue: name, Entries: entries})
		if err != nil {
			return nil, err
		}
		for _, s := range resp.GetSuccessful() {
			out.Successful = append(out.Successful, idEntry{s.GetId()})
		}
		for _, f := range resp.GetFailed() {
			out.Failed = append(out.Failed, failedEntry(f))
		}
	}
	return out, nil
}

func changeMessageVisibilityBatch(c *call, in []byte) (any, error) {
	name, req, err := c.decodeHandleBatch(in)
	if err != nil {
		return nil, err
	}
	out := changeBatchOut{Successful: []idEntry{}, Failed: []batchErrorEntry{}}
	var entries []*qv1.ChangeMessageVisibilityBatchEntry
	for _, e := range req.Entries {
		d, err := visibility(e.VisibilityTimeout)
		if err == nil && e.ReceiptHandle == "" {
			err = errMissingParameter("ReceiptHandle")
		}
		if err != nil {
			out.Failed = append(out.Failed, entryError(e.Id, err))
			continue
		}
		entries = append(entries, &qv1.ChangeMessageVisibilityBatchEntry{Id: e.Id, ReceiptHandle: e.ReceiptHandle, VisibilityTimeout: d})
	}
	if len(entries) > 0 {
		resp, err := c.h.cfg.Client.ChangeMessageVisibilityBatch(c.ctx, &qv1.ChangeMessageVisibilityBatchRequest{Queue: name, Entries: entries})
		if err != nil {
			return nil, err
		}
		for _, s := range resp.GetSuccessful() {
			out.Successful = append(out.Successful, idEntry{s.GetId()})
		}
		for _, f := range resp.GetFailed() {
			out.Failed = append(out.Failed, failedEntry(f))
		}
	}
	return out, nil
}
