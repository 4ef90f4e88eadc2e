package keys

import "fmt"

// Topic key kinds (the byte after StatePrefix(S)); 0x30-0x3F belong to
// topics (store/topics*.go).
//
//	0x30 T name                      topic record of truth (metadata shard) -> TopicRecord
//	0x31 T name partition            partition copy (data shard) -> TopicPartitionRecord
//	0x32 P offset                    partition log message -> TopicMessageRecord
//	0x33 P first_offset              segment of the log -> TopicSegment
//	0x34 P group                     consumer group offset -> TopicGroupRecord
//	0x35 P key                       idempotency record -> TopicDedupRecord
//	0x36 P expires key               expiry order of 0x35 -> empty
//	0x3F                             topic bookkeeping of the shard -> TopicShardMeta
//
// P (a shard-local partition id), partition and offset are 8-byte
// big-endian; expires is a sign-flipped int64; T, name, group and key are
// escape-and-terminate strings. Offsets are never negative.
const (
	stateTopic          byte = 0x30
	stateTopicPartition byte = 0x31
	stateTopicMessage   byte = 0x32
	stateTopicSegment   byte = 0x33
	stateTopicGroup     byte = 0x34
	stateTopicDedup     byte = 0x35
	stateTopicDedupExp  byte = 0x36
	stateTopicMeta      byte = 0x3F
)

// TopicMeta is the key of the shard's topic bookkeeping.
func TopicMeta(shard uint64) []byte { return stateKey(shard, stateTopicMeta) }

// TopicsPrefix bounds every topic record of the shard.
func TopicsPrefix(shard uint64) []byte { return stateKey(shard, stateTopic) }

// TopicTenantPrefix bounds a tenant's topic records, in name order.
func TopicTenantPrefix(shard uint64, tenant string) []byte {
	return AppendString(TopicsPrefix(shard), tenant)
}

// Topic is the key of a topic's record of truth.
func Topic(shard uint64, tenant, name string) []byte {
	return AppendString(TopicTenantPrefix(shard, tenant), name)
}

// DecodeTopic parses a Topic key.
func DecodeTopic(k []byte) (shard uint64, tenant, name string, err error) {
	shard, rest, err := readStateKind(k, stateTopic)
	if err == nil {
		tenant, rest, err = ReadString(rest)
	}
	if err == nil {
		name, rest, err = ReadString(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, "", "", err
	}
	return shard, tenant, name, nil
}

// TopicPartitionsPrefix bounds every partition copy of the shard.
func TopicPartitionsPrefix(shard uint64) []byte { return stateKey(shard, stateTopicPartition) }

// TopicPartition is the key of a partition copy.
func TopicPartition(shard uint64, tenant, name string, partition int32) []byte {
	k := AppendString(AppendString(TopicPartitionsPrefix(shard), tenant), name)
	return AppendUint64(k, uint64(partition))
}

// DecodeTopicPartition parses a TopicPartition key.
func DecodeTopicPartition(k []byte) (shard uint64, tenant, name string, partition int32, err error) {
	shard, rest, err := readStateKind(k, stateTopicPartition)
	if err == nil {
		tenant, rest, err = ReadString(rest)
	}
	if err == nil {
		name, rest, err = ReadString(rest)
	}
	var p uint64
	if err == nil {
		p, rest, err = ReadUint64(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil || p > 1<<31-1 {
		return 0, "", "", 0, ErrMalformed
	}
	return shard, tenant, name, int32(p), nil
}

func topicPartKey(shard uint64, kind byte, pid uint64) []byte {
	return AppendUint64(stateKey(shard, kind), pid)
}

// TopicMessagePrefix bounds a partition log's messages, in offset order.
func TopicMessagePrefix(shard, pid uint64) []byte { return topicPartKey(shard, stateTopicMessage, pid) }

// TopicMessage is the key of the message at offset.
func TopicMessage(shard, pid uint64, offset int64) []byte {
	return AppendUint64(TopicMessagePrefix(shard, pid), uint64(offset))
}

// DecodeTopicMessage parses a TopicMessage key.
func DecodeTopicMessage(k []byte) (shard, pid uint64, offset int64, err error) {
	return decodeTopicPartOffset(k, stateTopicMessage)
}

// TopicSegmentPrefix bounds a partition log's segments, oldest first.
func TopicSegmentPrefix(shard, pid uint64) []byte { return topicPartKey(shard, stateTopicSegment, pid) }

// TopicSegment is the key of the segment starting at first.
func TopicSegment(shard, pid uint64, first int64) []byte {
	return AppendUint64(TopicSegmentPrefix(shard, pid), uint64(first))
}

// DecodeTopicSegment parses a TopicSegment key.
func DecodeTopicSegment(k []byte) (shard, pid uint64, first int64, err error) {
	return decodeTopicPartOffset(k, stateTopicSegment)
}

func decodeTopicPartOffset(k []byte, kind byte) (shard, pid uint64, offset int64, err error) {
	shard, rest, err := readStateKind(k, kind)
	var off uint64
	if err == nil {
		pid, rest, err = ReadUint64(rest)
	}
	if err == nil {
		off, rest, err = ReadUint64(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil || off > 1<<63-1 {
		return 0, 0, 0, ErrMalformed
	}
	return shard, pid, int64(off), nil
}

// TopicGroupPrefix bounds a partition's consumer groups, in name order.
func TopicGroupPrefix(shard, pid uint64) []byte { return topicPartKey(shard, stateTopicGroup, pid) }

// TopicGroup is the key of a group's offset on a partition.
func TopicGroup(shard, pid uint64, group string) []byte {
	return AppendString(TopicGroupPrefix(shard, pid), group)
}

// DecodeTopicGroup parses a TopicGroup key.
func DecodeTopicGroup(k []byte) (shard, pid uint64, group string, err error) {
	shard, rest, err := readStateKind(k, stateTopicGroup)
	if err == nil {
		pid, rest, err = ReadUint64(rest)
	}
	if err == nil {
		group, rest, err = ReadString(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, "", err
	}
	return shard, pid, group, nil
}

// TopicDedupPrefix bounds a partition's idempotency records.
func TopicDedupPrefix(shard, pid uint64) []byte { return topicPartKey(shard, stateTopicDedup, pid) }

// TopicDedup is the key of an idempotency record.
func TopicDedup(shard, pid uint64, key string) []byte {
	return AppendString(TopicDedupPrefix(shard, pid), key)
}

// TopicDedupOrderPrefix bounds a partition's idempotency expiry order.
func TopicDedupOrderPrefix(shard, pid uint64) []byte {
	return topicPartKey(shard, stateTopicDedupExp, pid)
}

// TopicDedupOrder is the key of an idempotency record's place in expiry
// order.
func TopicDedupOrder(shard, pid uint64, expires int64, key string) []byte {
	return AppendString(AppendInt64(TopicDedupOrderPrefix(shard, pid), expires), key)
}

// DecodeTopicDedupOrder parses a TopicDedupOrder key.
func DecodeTopicDedupOrder(k []byte) (shard, pid uint64, expires int64, key string, err error) {
	shard, rest, err := readStateKind(k, stateTopicDedupExp)
	if err == nil {
		pid, rest, err = ReadUint64(rest)
	}
	if err == nil {
		expires, rest, err = ReadInt64(rest)
	}
	if err == nil {
		key, rest, err = ReadString(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, 0, 0, "", err
	}
	return shard, pid, expires, key, nil
}

// TopicPartitionRanges bounds every key of partition id pid under kind
// (messages, segments, groups, idempotency records and their order): a
// dropped partition is one DeleteRange per kind.
func TopicPartitionRanges(shard, pid uint64) [][2][]byte {
	var out [][2][]byte
	for _, kind := range []byte{stateTopicMessage, stateTopicSegment, stateTopicGroup, stateTopicDedup, stateTopicDedupExp} {
		p := topicPartKey(shard, kind, pid)
		out = append(out, [2][]byte{p, PrefixEnd(p)})
	}
	return out
}

// prettyTopic renders a topic key (k: the whole key) or "" when it does
// not decode.
func prettyTopic(k []byte, kind byte) string {
	switch kind {
	case stateTopicMeta:
		if len(k) == len(TopicMeta(0)) {
			return "/topicmeta"
		}
	case stateTopic:
		if _, t, n, err := DecodeTopic(k); err == nil {
			return fmt.Sprintf("/topic/%q/%q", t, n)
		}
	case stateTopicPartition:
		if _, t, n, p, err := DecodeTopicPartition(k); err == nil {
			return fmt.Sprintf("/topicpart/%q/%q/%d", t, n, p)
		}
	case stateTopicMessage:
		if _, pid, off, err := DecodeTopicMessage(k); err == nil {
			return fmt.Sprintf("/tp/%d/m/%d", pid, off)
		}
	case stateTopicSegment:
		if _, pid, off, err := DecodeTopicSegment(k); err == nil {
			return fmt.Sprintf("/tp/%d/seg/%d", pid, off)
		}
	case stateTopicGroup:
		if _, pid, g, err := DecodeTopicGroup(k); err == nil {
			return fmt.Sprintf("/tp/%d/group/%q", pid, g)
		}
	case stateTopicDedup:
		if pid, r, err := ReadUint64(k[len(StatePrefix(0))+1:]); err == nil {
			if key, r, err := ReadString(r); err == nil && len(r) == 0 {
				return fmt.Sprintf("/tp/%d/dedup/%q", pid, key)
			}
		}
	case stateTopicDedupExp:
		if _, pid, at, key, err := DecodeTopicDedupOrder(k); err == nil {
			return fmt.Sprintf("/tp/%d/dedupexp/%d/%q", pid, at, key)
		}
	}
	return ""
}
