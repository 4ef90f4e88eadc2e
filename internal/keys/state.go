package keys

import "fmt"

// State machine key kinds (the byte after StatePrefix(S)). 0x01 and 0x03 are
// raftnode's (applied index, ConfState) and are never used here.
//
//	0x02 T name                      catalog: tenant + queue name -> QueueRecord
//	0x04                             shard meta -> ShardMeta
//	0x05 T dlq source                dead-letter references: who names dlq as its DLQ
//	0x06 T                           tenant quota and usage -> TenantRecord
//	0x07 at Q                        due index: queue Q may have work for Tick at `at` -> T name
//	0x08                             due index low-water mark -> at seq
//	0x09 'k' id                      SigV4 access key (metadata shard) -> AccessKeyRecord
//	0x09 't' T id                    a tenant's access keys, in id order -> empty
//	0x10 Q 0x00                      queue meta -> QueueMeta
//	0x10 Q 'd' key                   short-lived record: idempotency key, FIFO
//	                                 deduplication id (DedupRecord) or receive
//	                                 attempt (ReceiveAttemptRecord)
//	0x10 Q 'e' expires key           expiry order of 'd' -> empty
//	0x10 Q 'f' group visible_at seq  fair queues: each group's visibility index -> flag byte
//	0x10 Q 'g' group seq             FIFO group order -> empty
//	0x10 Q 'h' visible_at seq        FIFO group heads by the head's (visible_at, seq) -> group
//	0x10 Q 'i' bucket key            idempotency key, in the expiry bucket (start ms) of
//	                                 its record -> sent_at (8 bytes) + uvarint seq
//	0x10 Q 'k' tag                   tag index low-water mark -> visible_at seq
//	0x10 Q 'l'                       visibility low-water mark -> visible_at seq
//	0x10 Q 'm' seq                   message record -> MessageRecord (written once)
//	0x10 Q 'p' rank visible_at seq   visibility index of priority 9-rank (not 4: that is 'v') -> flag byte
//	0x10 Q 's' seq                   lease state of a message whose visibility
//	                                 changed since it was stored -> 20 bytes
//	0x10 Q 't' tag visible_at seq    tag index -> flag byte
//	0x10 Q 'v' visible_at seq        visibility index (priority 4, the default) -> flag byte
//	0x10 Q 'w' 0x00                  receive-order bookkeeping -> QueueOrder
//	0x10 Q 'w' 0x01 rank             low-water mark of 'p' rank -> visible_at seq
//	0x10 Q 'w' 0x02 group            low-water mark of 'f' group -> visible_at seq
//	0x10 Q 'w' 0x03 group            fair queues: a group's standing -> GroupState
//	0x10 Q 'w' 0x04 count turn group fair queues: groups by (outstanding, turn) -> empty
//	0x10 Q 'x' expires_at seq        time-to-live order of messages with a ttl -> empty
//	0x20 id                          outbox entry -> OutboxEntry
//	0x21 source_shard id             delivered-outbox marker -> empty
//	0x22 at source_shard id          delivered-marker expiry order -> empty
//
// Q, seq, id and source_shard are 8-byte big-endian; visible_at, expires and
// at are sign-flipped int64 (AppendInt64); T, name, tag and key are
// escape-and-terminate strings.
const (
	stateCatalog        byte = 0x02
	stateShardMeta      byte = 0x04
	stateDeadLetterRef  byte = 0x05
	stateTenant         byte = 0x06
	stateDue            byte = 0x07
	stateDueLow         byte = 0x08
	stateAccessKey      byte = 0x09
	stateQueue          byte = 0x10
	stateOutbox         byte = 0x20
	stateDelivered      byte = 0x21
	stateDeliveredOrder byte = 0x22
)

// Queue sub-kinds (the byte after 0x10 Q).
const (
	queueMeta       byte = 0x00
	queueDedup      byte = 'd'
	queueDedupOrder byte = 'e'
	queueGroup      byte = 'g'
	queueGroupHead  byte = 'h'
	queueIdem       byte = 'i'
	queueMessage    byte = 'm'
	queueLease      byte = 's'
	queueTag        byte = 't'
	queueVisible    byte = 'v'
	queueVisibleLow byte = 'l'
	queueTagLow     byte = 'k'
	queueExpiry     byte = 'x'
	queuePriority   byte = 'p'
	queueFair       byte = 'f'
	queueOrder      byte = 'w'
)

// Sub-kinds of queueOrder ('w').
const (
	orderRecord       byte = 0x00
	orderPriorityLow  byte = 0x01
	orderFairLow      byte = 0x02
	orderGroupState   byte = 0x03
	orderGroupRing    byte = 0x04
	orderPriorityRank      = 9 // ranks 0..9: rank = 9 - priority
)

func stateKey(shard uint64, kind byte) []byte { return append(StatePrefix(shard), kind) }

// Tenant is the key of a tenant's quota and usage record.
func Tenant(shard uint64, tenant string) []byte {
	return AppendString(stateKey(shard, stateTenant), tenant)
}

// DecodeTenant returns the shard and tenant of a Tenant key.
func DecodeTenant(k []byte) (shard uint64, tenant string, err error) {
	shard, rest, err := readStateKind(k, stateTenant)
	if err != nil {
		return 0, "", err
	}
	tenant, rest, err = ReadString(rest)
	if err != nil || len(rest) != 0 {
		return 0, "", ErrMalformed
	}
	return shard, tenant, nil
}

// DuePrefix bounds the shard's due index, in (at, queue) order.
func DuePrefix(shard uint64) []byte { return stateKey(shard, stateDue) }

// DueUntil is the exclusive upper bound of due entries with at <= until.
func DueUntil(shard uint64, until int64) []byte {
	return AppendInt64(DuePrefix(shard), until+1)
}

// Due is the key of a queue's entry in the due index: Tick visits the queue
// once `at` has come (its value names the queue: tenant and name).
func Due(shard uint64, at int64, queue uint64) []byte {
	return AppendUint64(AppendInt64(DuePrefix(shard), at), queue)
}

// DecodeDue parses a Due key.
func DecodeDue(k []byte) (shard uint64, at int64, queue uint64, err error) {
	shard, rest, err := readStateKind(k, stateDue)
	if err == nil {
		at, rest, err = ReadInt64(rest)
	}
	if err == nil {
		queue, rest, err = ReadUint64(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, 0, err
	}
	return shard, at, queue, nil
}

// DueLow is the key of the due index's low-water mark (see VisibleLow): no
// live due entry sorts before the (at, queue) it holds.
func DueLow(shard uint64) []byte { return stateKey(shard, stateDueLow) }

// ShardMeta is the key of the shard's replicated bookkeeping.
func ShardMeta(shard uint64) []byte { return stateKey(shard, stateShardMeta) }

// CatalogPrefix bounds every queue of the shard.
func CatalogPrefix(shard uint64) []byte { return stateKey(shard, stateCatalog) }

// CatalogTenantPrefix bounds the queues of one tenant, in name order.
func CatalogTenantPrefix(shard uint64, tenant string) []byte {
	return AppendString(CatalogPrefix(shard), tenant)
}

// Catalog is the key of a queue's catalog entry.
func Catalog(shard uint64, tenant, name string) []byte {
	return AppendString(CatalogTenantPrefix(shard, tenant), name)
}

// DecodeCatalog parses a Catalog key.
func DecodeCatalog(k []byte) (shard uint64, tenant, name string, err error) {
	shard, rest, err := readStateKind(k, stateCatalog)
	if err != nil {
		return 0, "", "", err
	}
	if tenant, rest, err = ReadString(rest); err != nil {
		return 0, "", "", err
	}
	if name, rest, err = ReadString(rest); err != nil {
		return 0, "", "", err
	}
	return shard, tenant, name, noTrailing(rest)
}

// DeadLetterRefPrefix bounds the queues that name (tenant, dlq) as their
// dead-letter queue.
func DeadLetterRefPrefix(shard uint64, tenant, dlq string) []byte {
	return AppendString(AppendString(stateKey(shard, stateDeadLetterRef), tenant), dlq)
}

// DeadLetterRef records that queue source uses dlq as its dead-letter queue.
func DeadLetterRef(shard uint64, tenant, dlq, source string) []byte {
	return AppendString(DeadLetterRefPrefix(shard, tenant, dlq), source)
}

// DecodeDeadLetterRef parses a DeadLetterRef key.
func DecodeDeadLetterRef(k []byte) (shard uint64, tenant, dlq, source string, err error) {
	shard, rest, err := readStateKind(k, stateDeadLetterRef)
	if err != nil {
		return 0, "", "", "", err
	}
	for _, s := range []*string{&tenant, &dlq, &source} {
		if *s, rest, err = ReadString(rest); err != nil {
			return 0, "", "", "", err
		}
	}
	return shard, tenant, dlq, source, noTrailing(rest)
}

// appendQueueKind appends 0x02 S 0x10 Q sub to dst.
func appendQueueKind(dst []byte, shard, queue uint64, sub byte) []byte {
	dst = AppendUint64(append(dst, kindState), shard)
	return append(AppendUint64(append(dst, stateQueue), queue), sub)
}

// AppendMessage appends the key of a message record (Message) to dst: with
// a reused dst, building a key allocates nothing.
func AppendMessage(dst []byte, shard, queue, seq uint64) []byte {
	return AppendUint64(appendQueueKind(dst, shard, queue, queueMessage), seq)
}

// AppendLease appends the key of a lease record (Lease) to dst.
func AppendLease(dst []byte, shard, queue, seq uint64) []byte {
	return AppendUint64(appendQueueKind(dst, shard, queue, queueLease), seq)
}

// AppendVisible appends the key of a visibility index entry (Visible) to
// dst.
func AppendVisible(dst []byte, shard, queue uint64, visibleAt int64, seq uint64) []byte {
	return AppendUint64(AppendInt64(appendQueueKind(dst, shard, queue, queueVisible), visibleAt), seq)
}

// AppendTag appends the key of a tag index entry (Tag) to dst.
func AppendTag(dst []byte, shard, queue uint64, tag string, visibleAt int64, seq uint64) []byte {
	return AppendUint64(AppendInt64(AppendString(appendQueueKind(dst, shard, queue, queueTag), tag), visibleAt), seq)
}

// QueuePrefix bounds every key of one queue: DeleteRange over it drops the
// queue.
func QueuePrefix(shard, queue uint64) []byte {
	return AppendUint64(stateKey(shard, stateQueue), queue)
}

// QueueEnd is the exclusive end of QueuePrefix.
func QueueEnd(shard, queue uint64) []byte { return PrefixEnd(QueuePrefix(shard, queue)) }

// QueueMeta is the key of a queue's counters.
func QueueMeta(shard, queue uint64) []byte { return append(QueuePrefix(shard, queue), queueMeta) }

// MessagePrefix bounds a queue's message records, in seq order.
func MessagePrefix(shard, queue uint64) []byte {
	return append(QueuePrefix(shard, queue), queueMessage)
}

// Message is the key of a message record.
func Message(shard, queue, seq uint64) []byte {
	return AppendUint64(MessagePrefix(shard, queue), seq)
}

// DecodeMessage parses a Message key.
func DecodeMessage(k []byte) (shard, queue, seq uint64, err error) {
	shard, queue, rest, err := readQueueKind(k, queueMessage)
	if err != nil {
		return 0, 0, 0, err
	}
	if seq, rest, err = ReadUint64(rest); err != nil {
		return 0, 0, 0, err
	}
	return shard, queue, seq, noTrailing(rest)
}

// LeasePrefix bounds a queue's lease records, in seq order.
func LeasePrefix(shard, queue uint64) []byte {
	return append(QueuePrefix(shard, queue), queueLease)
}

// Lease is the key of a message's lease record (visible_at, receive count,
// first receive), apart from the message record so that a lease change
// never rewrites the body.
func Lease(shard, queue, seq uint64) []byte {
	return AppendUint64(LeasePrefix(shard, queue), seq)
}

// DecodeLease parses a Lease key.
func DecodeLease(k []byte) (shard, queue, seq uint64, err error) {
	shard, queue, rest, err := readQueueKind(k, queueLease)
	if err != nil {
		return 0, 0, 0, err
	}
	if seq, rest, err = ReadUint64(rest); err != nil {
		return 0, 0, 0, err
	}
	return shard, queue, seq, noTrailing(rest)
}

// VisiblePrefix bounds a queue's visibility index, in (visible_at, seq)
// order.
func VisiblePrefix(shard, queue uint64) []byte {
	return append(QueuePrefix(shard, queue), queueVisible)
}

// VisibleUntil is the exclusive upper bound of visibility entries with
// visible_at <= at.
func VisibleUntil(shard, queue uint64, at int64) []byte {
	return AppendInt64(VisiblePrefix(shard, queue), at+1)
}

// VisibleLow is the key of a queue's visibility low-water mark: no live
// visibility entry sorts before the (visible_at, seq) it holds, so scans
// start there instead of walking the tombstones of deleted messages.
func VisibleLow(shard, queue uint64) []byte {
	return append(QueuePrefix(shard, queue), queueVisibleLow)
}

// TagLow is the key of a tag index's low-water mark (see VisibleLow).
func TagLow(shard, queue uint64, tag string) []byte {
	return AppendString(append(QueuePrefix(shard, queue), queueTagLow), tag)
}

// TagLowPrefix bounds every tag low-water mark of a queue.
func TagLowPrefix(shard, queue uint64) []byte {
	return append(QueuePrefix(shard, queue), queueTagLow)
}

// LowMarkOf returns the low-water mark key of an index prefix made by
// VisiblePrefix or TagPrefix, or nil for any other prefix.
func LowMarkOf(prefix []byte) []byte {
	n := len(StatePrefix(0)) + 1 + 8 // 0x02 S 0x10 Q
	if len(prefix) <= n || prefix[0] != kindState || prefix[n-9] != stateQueue {
		return nil
	}
	mark := append([]byte(nil), prefix...)
	switch prefix[n] {
	case queueVisible:
		if len(prefix) != n+1 {
			return nil
		}
		mark[n] = queueVisibleLow
	case queueTag:
		mark[n] = queueTagLow
	case queuePriority:
		if len(prefix) != n+2 {
			return nil
		}
		return append(append([]byte(nil), prefix[:n]...), queueOrder, orderPriorityLow, prefix[n+1])
	case queueFair:
		return append(append([]byte(nil), prefix[:n]...), append([]byte{queueOrder, orderFairLow}, prefix[n+1:]...)...)
	default:
		return nil
	}
	return mark
}

// Visible is the key of a visibility index entry.
func Visible(shard, queue uint64, visibleAt int64, seq uint64) []byte {
	return AppendUint64(AppendInt64(VisiblePrefix(shard, queue), visibleAt), seq)
}

// DecodeVisible parses a Visible key.
func DecodeVisible(k []byte) (shard, queue uint64, visibleAt int64, seq uint64, err error) {
	return decodeAtSeq(k, queueVisible)
}

// decodeAtSeq parses the keys of the indexes ordered by (visible_at, seq):
// 0x02 S 0x10 Q sub visible_at seq.
func decodeAtSeq(k []byte, sub byte) (shard, queue uint64, visibleAt int64, seq uint64, err error) {
	shard, queue, rest, err := readQueueKind(k, sub)
	if err == nil {
		visibleAt, rest, err = ReadInt64(rest)
	}
	if err == nil {
		seq, rest, err = ReadUint64(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, 0, 0, err
	}
	return shard, queue, visibleAt, seq, nil
}

// TagPrefix bounds the index of one tag of a queue, in (visible_at, seq)
// order.
func TagPrefix(shard, queue uint64, tag string) []byte {
	return AppendString(append(QueuePrefix(shard, queue), queueTag), tag)
}

// TagUntil is the exclusive upper bound of a tag's entries with
// visible_at <= at.
func TagUntil(shard, queue uint64, tag string, at int64) []byte {
	return AppendInt64(TagPrefix(shard, queue, tag), at+1)
}

// TagsPrefix bounds every tag index entry of a queue.
func TagsPrefix(shard, queue uint64) []byte { return append(QueuePrefix(shard, queue), queueTag) }

// Tag is the key of a tag index entry.
func Tag(shard, queue uint64, tag string, visibleAt int64, seq uint64) []byte {
	return AppendUint64(AppendInt64(TagPrefix(shard, queue, tag), visibleAt), seq)
}

// DecodeTag parses a Tag key.
func DecodeTag(k []byte) (shard, queue uint64, tag string, visibleAt int64, seq uint64, err error) {
	shard, queue, rest, err := readQueueKind(k, queueTag)
	if err == nil {
		tag, rest, err = ReadString(rest)
	}
	if err == nil {
		visibleAt, rest, err = ReadInt64(rest)
	}
	if err == nil {
		seq, rest, err = ReadUint64(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, "", 0, 0, err
	}
	return shard, queue, tag, visibleAt, seq, nil
}

// DedupPrefix bounds a queue's dedup / idempotency records.
func DedupPrefix(shard, queue uint64) []byte { return append(QueuePrefix(shard, queue), queueDedup) }

// Dedup is the key of a dedup / idempotency record.
func Dedup(shard, queue uint64, key string) []byte {
	return AppendString(DedupPrefix(shard, queue), key)
}

// DecodeDedup parses a Dedup key.
func DecodeDedup(k []byte) (shard, queue uint64, key string, err error) {
	shard, queue, rest, err := readQueueKind(k, queueDedup)
	if err != nil {
		return 0, 0, "", err
	}
	if key, rest, err = ReadString(rest); err != nil {
		return 0, 0, "", err
	}
	return shard, queue, key, noTrailing(rest)
}

// DedupOrderPrefix bounds a queue's dedup expiry order.
func DedupOrderPrefix(shard, queue uint64) []byte {
	return append(QueuePrefix(shard, queue), queueDedupOrder)
}

// DedupOrderUntil is the exclusive upper bound of dedup expiry entries with
// expires <= at.
func DedupOrderUntil(shard, queue uint64, at int64) []byte {
	return AppendInt64(DedupOrderPrefix(shard, queue), at+1)
}

// DedupOrder is the key of a dedup record's place in expiry order.
func DedupOrder(shard, queue uint64, expires int64, key string) []byte {
	return AppendString(AppendInt64(DedupOrderPrefix(shard, queue), expires), key)
}

// DecodeDedupOrder parses a DedupOrder key.
func DecodeDedupOrder(k []byte) (shard, queue uint64, expires int64, key string, err error) {
	return decodeQueueTimeString(k, queueDedupOrder)
}

// decodeQueueTimeString parses 0x02 S 0x10 Q sub, an int64 and a string.
func decodeQueueTimeString(k []byte, sub byte) (shard, queue uint64, at int64, s string, err error) {
	shard, queue, rest, err := readQueueKind(k, sub)
	if err == nil {
		at, rest, err = ReadInt64(rest)
	}
	if err == nil {
		s, rest, err = ReadString(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, 0, "", err
	}
	return shard, queue, at, s, nil
}

// GroupsPrefix bounds every FIFO group order entry of a queue.
func GroupsPrefix(shard, queue uint64) []byte { return append(QueuePrefix(shard, queue), queueGroup) }

// GroupPrefix bounds one FIFO group's messages, in seq order.
func GroupPrefix(shard, queue uint64, group string) []byte {
	return AppendString(GroupsPrefix(shard, queue), group)
}

// Group is the key of a message's place in its FIFO group.
func Group(shard, queue uint64, group string, seq uint64) []byte {
	return AppendUint64(GroupPrefix(shard, queue, group), seq)
}

// DecodeGroup parses a Group key.
func DecodeGroup(k []byte) (shard, queue uint64, group string, seq uint64, err error) {
	shard, queue, rest, err := readQueueKind(k, queueGroup)
	if err == nil {
		group, rest, err = ReadString(rest)
	}
	if err == nil {
		seq, rest, err = ReadUint64(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, "", 0, err
	}
	return shard, queue, group, seq, nil
}

// GroupHeadPrefix bounds a queue's FIFO group heads, in the (visible_at,
// seq) order of each group's first message.
func GroupHeadPrefix(shard, queue uint64) []byte {
	return append(QueuePrefix(shard, queue), queueGroupHead)
}

// GroupHeadUntil is the exclusive upper bound of group heads with
// visible_at <= at.
func GroupHeadUntil(shard, queue uint64, at int64) []byte {
	return AppendInt64(GroupHeadPrefix(shard, queue), at+1)
}

// GroupHead is the key of a FIFO group's head entry: the group's first
// message (by seq) is seq and becomes visible at visibleAt.
func GroupHead(shard, queue uint64, visibleAt int64, seq uint64) []byte {
	return AppendUint64(AppendInt64(GroupHeadPrefix(shard, queue), visibleAt), seq)
}

// ExpiryPrefix bounds a queue's time-to-live order, in (expires_at, seq)
// order: Tick takes its head up to now.
func ExpiryPrefix(shard, queue uint64) []byte {
	return append(QueuePrefix(shard, queue), queueExpiry)
}

// Expiry is the key of message seq's place in the time-to-live order.
func Expiry(shard, queue uint64, expiresAt int64, seq uint64) []byte {
	return AppendUint64(AppendInt64(ExpiryPrefix(shard, queue), expiresAt), seq)
}

// DecodeExpiry parses an Expiry key.
func DecodeExpiry(k []byte) (shard, queue uint64, expiresAt int64, seq uint64, err error) {
	return decodeAtSeq(k, queueExpiry)
}

// DecodeGroupHead parses a GroupHead key.
func DecodeGroupHead(k []byte) (shard, queue uint64, visibleAt int64, seq uint64, err error) {
	return decodeAtSeq(k, queueGroupHead)
}

// OutboxPrefix bounds the shard's outbox, in id order.
func OutboxPrefix(shard uint64) []byte { return stateKey(shard, stateOutbox) }

// Outbox is the key of an outbox entry.
func Outbox(shard, id uint64) []byte { return AppendUint64(OutboxPrefix(shard), id) }

// DecodeOutbox parses an Outbox key.
func DecodeOutbox(k []byte) (shard, id uint64, err error) {
	shard, rest, err := readStateKind(k, stateOutbox)
	if err != nil {
		return 0, 0, err
	}
	if id, rest, err = ReadUint64(rest); err != nil {
		return 0, 0, err
	}
	return shard, id, noTrailing(rest)
}

// Delivered is the marker that outbox entry id of sourceShard has been
// inserted here: it makes delivery exactly-once.
func Delivered(shard, sourceShard, id uint64) []byte {
	return AppendUint64(AppendUint64(stateKey(shard, stateDelivered), sourceShard), id)
}

// DecodeDelivered parses a Delivered key.
func DecodeDelivered(k []byte) (shard, sourceShard, id uint64, err error) {
	shard, rest, err := readStateKind(k, stateDelivered)
	if err == nil {
		sourceShard, rest, err = ReadUint64(rest)
	}
	if err == nil {
		id, rest, err = ReadUint64(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, 0, err
	}
	return shard, sourceShard, id, nil
}

// DeliveredOrderPrefix bounds the delivered markers in time order.
func DeliveredOrderPrefix(shard uint64) []byte { return stateKey(shard, stateDeliveredOrder) }

// DeliveredOrderUntil is the exclusive upper bound of markers delivered at
// or before at.
func DeliveredOrderUntil(shard uint64, at int64) []byte {
	return AppendInt64(DeliveredOrderPrefix(shard), at+1)
}

// DeliveredOrder is the key of a delivered marker's place in time order.
func DeliveredOrder(shard uint64, at int64, sourceShard, id uint64) []byte {
	return AppendUint64(AppendUint64(AppendInt64(DeliveredOrderPrefix(shard), at), sourceShard), id)
}

// DecodeDeliveredOrder parses a DeliveredOrder key.
func DecodeDeliveredOrder(k []byte) (shard uint64, at int64, sourceShard, id uint64, err error) {
	shard, rest, err := readStateKind(k, stateDeliveredOrder)
	if err == nil {
		at, rest, err = ReadInt64(rest)
	}
	if err == nil {
		sourceShard, rest, err = ReadUint64(rest)
	}
	if err == nil {
		id, rest, err = ReadUint64(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, 0, 0, err
	}
	return shard, at, sourceShard, id, nil
}

func noTrailing(rest []byte) error {
	if len(rest) != 0 {
		return ErrMalformed
	}
	return nil
}

// readStateKind checks 0x02 S kind and returns S and what follows.
func readStateKind(k []byte, kind byte) (uint64, []byte, error) {
	if len(k) < 10 || k[0] != kindState || k[9] != kind {
		return 0, nil, ErrMalformed
	}
	shard, _, _ := ReadUint64(k[1:])
	return shard, k[10:], nil
}

// readQueueKind checks 0x02 S 0x10 Q sub and returns S, Q and what follows.
func readQueueKind(k []byte, sub byte) (shard, queue uint64, rest []byte, err error) {
	shard, rest, err = readStateKind(k, stateQueue)
	if err != nil || len(rest) < 9 || rest[8] != sub {
		return 0, 0, nil, ErrMalformed
	}
	queue, _, _ = ReadUint64(rest)
	return shard, queue, rest[9:], nil
}

// prettyState renders the part of a state key after the shard id.
func prettyState(rest []byte) string {
	if len(rest) == 0 {
		return ""
	}
	// Re-prefix with a dummy shard so the strict decoders can be reused.
	k := append(StatePrefix(0), rest...)
	switch rest[0] {
	case stateApplied:
		return "/applied"
	case stateConfState:
		return "/confstate"
	case stateShardMeta:
		if len(rest) == 1 {
			return "/shardmeta"
		}
	case stateCatalog:
		if _, t, n, err := DecodeCatalog(k); err == nil {
			return fmt.Sprintf("/catalog/%q/%q", t, n)
		}
	case stateTenant:
		if _, t, err := DecodeTenant(k); err == nil {
			return fmt.Sprintf("/tenant/%q", t)
		}
	case stateDue:
		if _, at, q, err := DecodeDue(k); err == nil {
			return fmt.Sprintf("/due/%d/%d", at, q)
		}
	case stateDueLow:
		if len(rest) == 1 {
			return "/duelow"
		}
	case stateAccessKey:
		return prettyAccessKey(k)
	case stateDeadLetterRef:
		if _, t, d, s, err := DecodeDeadLetterRef(k); err == nil {
			return fmt.Sprintf("/dlqref/%q/%q/%q", t, d, s)
		}
	case stateQueue:
		return prettyQueue(k, rest)
	case stateOutbox:
		if _, id, err := DecodeOutbox(k); err == nil {
			return fmt.Sprintf("/outbox/%d", id)
		}
	case stateDelivered:
		if _, src, id, err := DecodeDelivered(k); err == nil {
			return fmt.Sprintf("/delivered/%d/%d", src, id)
		}
	case stateDeliveredOrder:
		if _, at, src, id, err := DecodeDeliveredOrder(k); err == nil {
			return fmt.Sprintf("/delivered-at/%d/%d/%d", at, src, id)
		}
	case stateTopic, stateTopicPartition, stateTopicMessage, stateTopicSegment, stateTopicGroup,
		stateTopicDedup, stateTopicDedupExp, stateTopicMeta:
		if s := prettyTopic(k, rest[0]); s != "" {
			return s
		}
	}
	return fmt.Sprintf("/%x", rest)
}

// IdemPrefix bounds a queue's bucketed idempotency records.
func IdemPrefix(shard, queue uint64) []byte { return append(QueuePrefix(shard, queue), queueIdem) }

// IdemBucketStart is the first key of the bucket that starts at start (and
// the exclusive end of the buckets before it).
func IdemBucketStart(shard, queue uint64, start int64) []byte {
	return AppendInt64(IdemPrefix(shard, queue), start)
}

// Idem is the key of an idempotency record in the bucket that starts at
// start.
func Idem(shard, queue uint64, start int64, key string) []byte {
	return AppendString(IdemBucketStart(shard, queue, start), key)
}

// DecodeIdem parses an Idem key.
func DecodeIdem(k []byte) (shard, queue uint64, start int64, key string, err error) {
	return decodeQueueTimeString(k, queueIdem)
}

func prettyQueue(k, rest []byte) string {
	if len(rest) < 10 {
		return fmt.Sprintf("/%x", rest)
	}
	q, _, _ := ReadUint64(rest[1:])
	switch rest[9] {
	case queueMeta:
		if len(rest) == 10 {
			return fmt.Sprintf("/q/%d/meta", q)
		}
	case queueMessage:
		if _, _, seq, err := DecodeMessage(k); err == nil {
			return fmt.Sprintf("/q/%d/m/%d", q, seq)
		}
	case queueLease:
		if _, _, seq, err := DecodeLease(k); err == nil {
			return fmt.Sprintf("/q/%d/s/%d", q, seq)
		}
	case queueVisibleLow:
		if len(rest) == 10 {
			return fmt.Sprintf("/q/%d/vlow", q)
		}
	case queueTagLow:
		if tag, r, err := ReadString(rest[10:]); err == nil && len(r) == 0 {
			return fmt.Sprintf("/q/%d/tlow/%q", q, tag)
		}
	case queueVisible:
		if _, _, at, seq, err := DecodeVisible(k); err == nil {
			return fmt.Sprintf("/q/%d/v/%d/%d", q, at, seq)
		}
	case queueTag:
		if _, _, tag, at, seq, err := DecodeTag(k); err == nil {
			return fmt.Sprintf("/q/%d/t/%q/%d/%d", q, tag, at, seq)
		}
	case queueDedup:
		if _, _, key, err := DecodeDedup(k); err == nil {
			return fmt.Sprintf("/q/%d/d/%q", q, key)
		}
	case queueDedupOrder:
		if _, _, at, key, err := DecodeDedupOrder(k); err == nil {
			return fmt.Sprintf("/q/%d/e/%d/%q", q, at, key)
		}
	case queueIdem:
		if _, _, start, key, err := DecodeIdem(k); err == nil {
			return fmt.Sprintf("/q/%d/i/%d/%q", q, start, key)
		}
	case queueGroup:
		if _, _, g, seq, err := DecodeGroup(k); err == nil {
			return fmt.Sprintf("/q/%d/g/%q/%d", q, g, seq)
		}
	case queueGroupHead:
		if _, _, at, seq, err := DecodeGroupHead(k); err == nil {
			return fmt.Sprintf("/q/%d/h/%d/%d", q, at, seq)
		}
	case queueExpiry:
		if _, _, at, seq, err := DecodeExpiry(k); err == nil {
			return fmt.Sprintf("/q/%d/x/%d/%d", q, at, seq)
		}
	case queuePriority:
		if _, _, r, at, seq, err := DecodePriority(k); err == nil {
			return fmt.Sprintf("/q/%d/p/%d/%d/%d", q, r, at, seq)
		}
	case queueFair:
		if _, _, g, at, seq, err := DecodeFair(k); err == nil {
			return fmt.Sprintf("/q/%d/f/%q/%d/%d", q, g, at, seq)
		}
	case queueOrder:
		if _, _, n, turn, g, err := DecodeGroupRing(k); err == nil {
			return fmt.Sprintf("/q/%d/ring/%d/%d/%q", q, n, turn, g)
		}
		return fmt.Sprintf("/q/%d/w/%x", q, rest[10:])
	}
	return fmt.Sprintf("/q/%d/%x", q, rest[9:])
}
