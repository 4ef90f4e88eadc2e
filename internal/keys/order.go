package keys

// Keys of issue 18's receive orders (see state.go for the layout): the
// priority indexes ('p'), the fair group indexes ('f') and their
// bookkeeping ('w').

// PriorityPrefix bounds the visibility index of rank (9 - priority), in
// (visible_at, seq) order. The default priority (4, rank 5) has none: its
// messages are in the visibility index 'v', as every message was before
// priorities.
func PriorityPrefix(shard, queue uint64, rank byte) []byte {
	return append(append(QueuePrefix(shard, queue), queuePriority), rank)
}

// PriorityLow is the key of a priority index's low-water mark (see
// VisibleLow): LowMarkOf(PriorityPrefix(shard, queue, rank)).
func PriorityLow(shard, queue uint64, rank byte) []byte {
	return append(OrderPrefix(shard, queue), orderPriorityLow, rank)
}

// PrioritiesPrefix bounds every priority index of a queue.
func PrioritiesPrefix(shard, queue uint64) []byte {
	return append(QueuePrefix(shard, queue), queuePriority)
}

// AppendPriority appends the key of a priority index entry to dst.
func AppendPriority(dst []byte, shard, queue uint64, rank byte, visibleAt int64, seq uint64) []byte {
	dst = append(appendQueueKind(dst, shard, queue, queuePriority), rank)
	return AppendUint64(AppendInt64(dst, visibleAt), seq)
}

// DecodePriority parses a priority index key.
func DecodePriority(k []byte) (shard, queue uint64, rank byte, visibleAt int64, seq uint64, err error) {
	shard, queue, rest, err := readQueueKind(k, queuePriority)
	if err != nil || len(rest) < 1 || rest[0] > orderPriorityRank {
		return 0, 0, 0, 0, 0, ErrMalformed
	}
	rank, rest = rest[0], rest[1:]
	visibleAt, rest, err = ReadInt64(rest)
	if err == nil {
		seq, rest, err = ReadUint64(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, 0, 0, 0, err
	}
	return shard, queue, rank, visibleAt, seq, nil
}

// FairsPrefix bounds every fair group index of a queue.
func FairsPrefix(shard, queue uint64) []byte { return append(QueuePrefix(shard, queue), queueFair) }

// FairPrefix bounds one group's visibility index on a fair queue, in
// (visible_at, seq) order.
func FairPrefix(shard, queue uint64, group string) []byte {
	return AppendString(FairsPrefix(shard, queue), group)
}

// AppendFair appends the key of a fair group index entry to dst.
func AppendFair(dst []byte, shard, queue uint64, group string, visibleAt int64, seq uint64) []byte {
	dst = AppendString(appendQueueKind(dst, shard, queue, queueFair), group)
	return AppendUint64(AppendInt64(dst, visibleAt), seq)
}

// DecodeFair parses a fair group index key.
func DecodeFair(k []byte) (shard, queue uint64, group string, visibleAt int64, seq uint64, err error) {
	shard, queue, rest, err := readQueueKind(k, queueFair)
	if err == nil {
		group, rest, err = ReadString(rest)
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
	return shard, queue, group, visibleAt, seq, nil
}

// OrderPrefix bounds a queue's receive-order bookkeeping (QueueOrder, the
// priority and fair index marks, group states and the group ring).
func OrderPrefix(shard, queue uint64) []byte { return append(QueuePrefix(shard, queue), queueOrder) }

// QueueOrder is the key of a queue's QueueOrder record.
func QueueOrder(shard, queue uint64) []byte { return append(OrderPrefix(shard, queue), orderRecord) }

// GroupState is the key of a fair queue's group standing.
func GroupState(shard, queue uint64, group string) []byte {
	return AppendString(append(OrderPrefix(shard, queue), orderGroupState), group)
}

// GroupRingPrefix bounds a fair queue's groups in (outstanding, turn,
// group) order.
func GroupRingPrefix(shard, queue uint64) []byte {
	return append(OrderPrefix(shard, queue), orderGroupRing)
}

// GroupRing is the key of a group's place in the ring.
func GroupRing(shard, queue uint64, outstanding, turn uint64, group string) []byte {
	return AppendString(AppendUint64(AppendUint64(GroupRingPrefix(shard, queue), outstanding), turn), group)
}

// DecodeGroupRing parses a GroupRing key.
func DecodeGroupRing(k []byte) (shard, queue, outstanding, turn uint64, group string, err error) {
	shard, queue, rest, err := readQueueKind(k, queueOrder)
	if err != nil || len(rest) < 1 || rest[0] != orderGroupRing {
		return 0, 0, 0, 0, "", ErrMalformed
	}
	outstanding, rest, err = ReadUint64(rest[1:])
	if err == nil {
		turn, rest, err = ReadUint64(rest)
	}
	if err == nil {
		group, rest, err = ReadString(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, 0, 0, "", err
	}
	return shard, queue, outstanding, turn, group, nil
}
