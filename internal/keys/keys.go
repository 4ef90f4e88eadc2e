// Package keys builds and parses every Pebble key quorumq writes. All keys go
// through here so their byte order is defined (and tested) in one place.
//
// Layout (S = shard id, 8 bytes big-endian):
//
//	0x01 S 'h'                 Raft HardState              (unreplicated)
//	0x01 S 'l' index           Raft log entry              (unreplicated)
//	0x01 S 't'                 Raft log truncation state   (unreplicated)
//	0x01 S 'r'                 snapshot install in progress (unreplicated)
//	0x01 S 'x'                 group removal in progress   (unreplicated; state without a WAL)
//	0x02 S 0x01                applied index               (replicated: in snapshots)
//	0x02 S 0x03                Raft ConfState as of applied index
//	0x02 S ...                 state machine keys, see state.go
//	0x03 'shards'              the node's shard count      (node-local)
//	0x03 'incarnation'         this data directory's raft incarnation (node-local)
//	0x03 'peerinc' id          a peer's incarnation, pinned on first contact (node-local)
//	0x03 'joinedid'            the node id this node got by joining (node-local)
//
// Unreplicated Raft state and replicated state sit under different first
// bytes, so a shard's snapshot is one bounded scan of [StatePrefix(S),
// StateEnd(S)) and dropping a shard is one DeleteRange per prefix.
//
// Integers are big-endian fixed width; strings are escaped and terminated
// (0x00 -> 0x00 0xFF, end = 0x00 0x01), so they sort bytewise and a decoder
// knows where they end. Never varints or protobuf inside keys.
package keys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Key kinds (first byte).
const (
	kindRaft  byte = 0x01
	kindState byte = 0x02
	kindNode  byte = 0x03
)

// NodeShardCount is the node-local key of the shard count the data
// directory was bootstrapped with (never in a snapshot: outside every
// shard's ranges).
func NodeShardCount() []byte { return append([]byte{kindNode}, "shards"...) }

// NodeIncarnation is the node-local key of the random incarnation a data
// directory was created with: a wiped disk gets a new one.
func NodeIncarnation() []byte { return append([]byte{kindNode}, "incarnation"...) }

// PeerIncarnation is the node-local key of the incarnation of peer node id
// that this node first heard from (raftnode fences any other).
func PeerIncarnation(id uint64) []byte {
	return AppendUint64(append([]byte{kindNode}, "peerinc"...), id)
}

// NodeJoinedID is the node-local key of the node id a node got when it
// joined a running cluster (serve --join); absent on bootstrap nodes.
func NodeJoinedID() []byte { return append([]byte{kindNode}, "joinedid"...) }

// PeerIncarnationPrefix is the prefix of every PeerIncarnation key.
func PeerIncarnationPrefix() []byte { return append([]byte{kindNode}, "peerinc"...) }

// Raft key suffixes.
const (
	raftHardState byte = 'h'
	raftLog       byte = 'l'
	raftTruncated byte = 't'
	raftRestore   byte = 'r'
	raftRemove    byte = 'x'
)

// State key suffixes owned by raftnode.
const (
	stateApplied   byte = 0x01
	stateConfState byte = 0x03
)

// ErrMalformed reports a key that does not decode.
var ErrMalformed = errors.New("keys: malformed key")

// AppendUint64 appends v big-endian.
func AppendUint64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// AppendUint32 appends v big-endian.
func AppendUint32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// AppendInt64 appends v big-endian with the sign bit flipped, so negative
// values sort before positive ones.
func AppendInt64(b []byte, v int64) []byte { return AppendUint64(b, uint64(v)^(1<<63)) }

// AppendString appends s escaped and terminated.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] == 0x00 {
			b = append(b, 0x00, 0xFF)
		} else {
			b = append(b, s[i])
		}
	}
	return append(b, 0x00, 0x01)
}

// ReadUint64 decodes a big-endian uint64 from the front of b.
func ReadUint64(b []byte) (uint64, []byte, error) {
	if len(b) < 8 {
		return 0, nil, ErrMalformed
	}
	return binary.BigEndian.Uint64(b), b[8:], nil
}

// ReadUint32 decodes a big-endian uint32 from the front of b.
func ReadUint32(b []byte) (uint32, []byte, error) {
	if len(b) < 4 {
		return 0, nil, ErrMalformed
	}
	return binary.BigEndian.Uint32(b), b[4:], nil
}

// ReadInt64 decodes what AppendInt64 wrote.
func ReadInt64(b []byte) (int64, []byte, error) {
	u, rest, err := ReadUint64(b)
	return int64(u ^ (1 << 63)), rest, err
}

// ReadString decodes what AppendString wrote.
func ReadString(b []byte) (string, []byte, error) {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] != 0x00 {
			out = append(out, b[i])
			continue
		}
		if i+1 >= len(b) {
			return "", nil, ErrMalformed
		}
		switch b[i+1] {
		case 0xFF:
			out = append(out, 0x00)
			i++
		case 0x01:
			return string(out), b[i+2:], nil
		default:
			return "", nil, ErrMalformed
		}
	}
	return "", nil, ErrMalformed
}

// PrefixEnd returns the smallest key greater than every key starting with p.
func PrefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xFF: no upper bound
}

func shardPrefix(kind byte, shard uint64) []byte {
	// 64 bytes hold every fixed-width key (an index entry is 35) and most
	// tag keys without a second allocation.
	return AppendUint64(append(make([]byte, 0, 64), kind), shard)
}

// RaftPrefix is the start of a shard's unreplicated Raft state.
func RaftPrefix(shard uint64) []byte { return shardPrefix(kindRaft, shard) }

// RaftEnd is the end of a shard's unreplicated Raft state.
func RaftEnd(shard uint64) []byte { return PrefixEnd(RaftPrefix(shard)) }

// HardState is the key of a shard's Raft HardState.
func HardState(shard uint64) []byte { return append(RaftPrefix(shard), raftHardState) }

// Truncated is the key of a shard's log truncation state (index and term of
// the last entry removed).
func Truncated(shard uint64) []byte { return append(RaftPrefix(shard), raftTruncated) }

// RestoreMarker is the key of a shard's "snapshot install in progress"
// record (index and term of the snapshot, 16 bytes BE).
func RestoreMarker(shard uint64) []byte { return append(RaftPrefix(shard), raftRestore) }

// RemoveMarker is the key of a shard's "group removal in progress" record
// (with the state in a Pebble without a WAL: the log is gone, the state
// range may not be).
func RemoveMarker(shard uint64) []byte { return append(RaftPrefix(shard), raftRemove) }

// LogPrefix is the start of a shard's Raft log entries.
func LogPrefix(shard uint64) []byte { return append(RaftPrefix(shard), raftLog) }

// LogEntry is the key of the log entry at index.
func LogEntry(shard, index uint64) []byte { return AppendUint64(LogPrefix(shard), index) }

// LogEnd bounds a shard's log entries.
func LogEnd(shard uint64) []byte { return PrefixEnd(LogPrefix(shard)) }

// DecodeLogEntry returns the shard and index of a log entry key.
func DecodeLogEntry(k []byte) (shard, index uint64, err error) {
	if len(k) != 1+8+1+8 || k[0] != kindRaft || k[9] != raftLog {
		return 0, 0, ErrMalformed
	}
	shard, _, _ = ReadUint64(k[1:])
	index, _, _ = ReadUint64(k[10:])
	return shard, index, nil
}

// AllStateStart and AllStateEnd bound every shard's replicated state: what
// the state store holds, while Raft state (kindRaft) and the node's own
// records (kindNode) lie outside.
func AllStateStart() []byte { return []byte{kindState} }

// AllStateEnd: see AllStateStart.
func AllStateEnd() []byte { return []byte{kindState + 1} }

// StatePrefix is the start of a shard's replicated state: exactly what a
// snapshot of the shard holds.
func StatePrefix(shard uint64) []byte { return shardPrefix(kindState, shard) }

// StateEnd bounds a shard's replicated state.
func StateEnd(shard uint64) []byte { return PrefixEnd(StatePrefix(shard)) }

// AppliedIndex is the key of a shard's applied index, written in every apply
// batch.
func AppliedIndex(shard uint64) []byte { return append(StatePrefix(shard), stateApplied) }

// ConfState is the key of a shard's Raft ConfState as of the applied index.
func ConfState(shard uint64) []byte { return append(StatePrefix(shard), stateConfState) }

// Pretty renders a key for logs and debugging.
func Pretty(k []byte) string {
	if len(k) < 9 {
		return fmt.Sprintf("%x", k)
	}
	shard, rest, _ := ReadUint64(k[1:])
	switch k[0] {
	case kindRaft:
		if len(rest) == 0 {
			return fmt.Sprintf("/raft/%d", shard)
		}
		switch rest[0] {
		case raftHardState:
			return fmt.Sprintf("/raft/%d/hardstate", shard)
		case raftTruncated:
			return fmt.Sprintf("/raft/%d/truncated", shard)
		case raftRestore:
			return fmt.Sprintf("/raft/%d/restoring", shard)
		case raftRemove:
			return fmt.Sprintf("/raft/%d/removing", shard)
		case raftLog:
			if idx, r, err := ReadUint64(rest[1:]); err == nil && len(r) == 0 {
				return fmt.Sprintf("/raft/%d/log/%d", shard, idx)
			}
		}
		return fmt.Sprintf("/raft/%d/%x", shard, rest)
	case kindState:
		return fmt.Sprintf("/state/%d%s", shard, prettyState(rest))
	}
	return fmt.Sprintf("%x", k)
}
