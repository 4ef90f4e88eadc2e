package chaos

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// replicaState is what a stopped node's Pebble holds of every shard.
type replicaState struct {
	applied map[uint64]uint64
	hash    map[uint64]string
	ids     map[string]bool // messages stored, in queues or in the outbox
}

// quietLogger silences Pebble's informational lines.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// readReplica opens a stopped node's data read-only and hashes each shard's
// replicated key range (the state machine: byte-identical on every replica
// at the same applied index), collecting the stored message ids.
func readReplica(dir string, shards int) (replicaState, error) {
	db, err := pebble.Open(filepath.Join(dir, "pebble"), &pebble.Options{ReadOnly: true, Logger: quietLogger{}})
	if err != nil {
		return replicaState{}, fmt.Errorf("open %s: %w", dir, err)
	}
	defer db.Close()
	rs := replicaState{applied: map[uint64]uint64{}, hash: map[uint64]string{}, ids: map[string]bool{}}
	for s := uint64(0); s < uint64(shards); s++ {
		it, err := db.NewIter(&pebble.IterOptions{LowerBound: keys.StatePrefix(s), UpperBound: keys.StateEnd(s)})
		if err != nil {
			return rs, fmt.Errorf("iterate shard %d: %w", s, err)
		}
		h := sha256.New()
		outbox := keys.OutboxPrefix(s)
		for valid := it.First(); valid; valid = it.Next() {
			k, v := it.Key(), it.Value()
			fmt.Fprintf(h, "%d:%x=%d:%x;", len(k), k, len(v), v)
			switch {
			case bytes.Equal(k, keys.AppliedIndex(s)) && len(v) == 8:
				rs.applied[s] = binary.BigEndian.Uint64(v)
			case bytes.HasPrefix(k, outbox):
				e := &storepb.OutboxEntry{}
				if err := proto.Unmarshal(v, e); err != nil {
					_ = it.Close()
					return rs, fmt.Errorf("outbox entry: %w", err)
				}
				rs.ids[e.GetMessage().GetId()] = true
			default:
				if _, _, _, err := keys.DecodeMessage(k); err == nil {
					m := &storepb.MessageRecord{}
					if err := proto.Unmarshal(v, m); err != nil {
						_ = it.Close()
						return rs, fmt.Errorf("message record: %w", err)
					}
					rs.ids[m.GetId()] = true
				}
			}
		}
		err = it.Error()
		_ = it.Close()
		if err != nil {
			return rs, fmt.Errorf("iterate shard %d: %w", s, err)
		}
		rs.hash[s] = fmt.Sprintf("%x", h.Sum(nil))
	}
	return rs, nil
}

// compareReplicas reads every (stopped) node and reports where replicas
// differ: applied index or state hash per shard, and acknowledged messages
// (want: id -> body) missing from a replica.
func (c *cluster) compareReplicas(want map[string]string) ([]string, map[uint64]replicaState, error) {
	states := map[uint64]replicaState{}
	for _, id := range c.ids {
		rs, err := readReplica(c.nodes[id].dir, c.shards)
		if err != nil {
			return nil, nil, fmt.Errorf("node %d: %w", id, err)
		}
		states[id] = rs
	}
	var diffs []string
	ref := states[c.ids[0]]
	for _, id := range c.ids {
		rs := states[id]
		for s := uint64(0); s < uint64(c.shards); s++ {
			if rs.applied[s] != ref.applied[s] || rs.hash[s] != ref.hash[s] {
				diffs = append(diffs, fmt.Sprintf("shard %d: node %d applied %d hash %.12s, node %d applied %d hash %.12s",
					s, c.ids[0], ref.applied[s], ref.hash[s], id, rs.applied[s], rs.hash[s]))
			}
		}
		missing := 0
		for m, body := range want {
			if !rs.ids[m] {
				if missing < 5 {
					diffs = append(diffs, fmt.Sprintf("node %d: acknowledged message %s (%s), never deleted, is not in its state", id, m, body))
				}
				missing++
			}
		}
		if missing > 5 {
			diffs = append(diffs, fmt.Sprintf("node %d: %d acknowledged messages missing in all", id, missing))
		}
	}
	return diffs, states, nil
}
