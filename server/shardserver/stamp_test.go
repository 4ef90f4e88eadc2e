package shardserver

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

func marshalCmd(t *testing.T, cmd *storepb.Command) []byte {
	t.Helper()
	data, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestRestamp: time_ms is rewritten in place, later only and at the same
// size; every other byte stays; what cannot be parsed is left alone.
func TestRestamp(t *testing.T) {
	const stamp = int64(1_796_000_000_000)
	cmd := &storepb.Command{Version: 1, TimeMs: stamp, Op: &storepb.Command_Send{Send: &storepb.Send{
		Tenant: "t", Queue: "q", Entries: []*storepb.SendEntry{{Body: "hello", Tags: []string{"a"}}}}}}
	data := marshalCmd(t, cmd)
	if !restamp(data, stamp+250) {
		t.Fatal("a later time was not stamped")
	}
	got := &storepb.Command{}
	if err := proto.Unmarshal(data, got); err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(cmd).(*storepb.Command)
	want.TimeMs = stamp + 250
	if !proto.Equal(got, want) {
		t.Fatalf("restamped %v, want %v", got, want)
	}
	for _, now := range []int64{stamp + 250, stamp, 1 << 50} { // not later; later but longer
		before := string(data)
		if restamp(data, now) || string(data) != before {
			t.Fatalf("restamp(%d) changed the command", now)
		}
	}
	// time_ms after the op (any field order parses) and unknown fields.
	late := append(marshalCmd(t, &storepb.Command{Version: 1, Op: cmd.Op}), marshalCmd(t, &storepb.Command{TimeMs: stamp})...)
	late = append(late, 0xf8, 0x3f, 0x01) // field 1023, varint 1
	if !restamp(late, stamp+1) {
		t.Fatal("time_ms after the op was not stamped")
	}
	for _, bad := range [][]byte{nil, {0xff}, {0x12, 0x05, 'a'}, {0x10}, {0x10, 0x80}} {
		if restamp(bad, stamp) {
			t.Fatalf("restamp(%x) rewrote a payload it cannot parse", bad)
		}
	}
}

// TestRestampedStampsKeepApplyTime: a receive appended ahead of sends
// stamped before it (the consume class goes first in each round), round
// after round. With the stamps read at Propose, apply time runs ahead of
// the newest stamp; stamped again in log order (Stamp), it never does.
func TestRestampedStampsKeepApplyTime(t *testing.T) {
	ahead := func(restamped bool) int64 {
		db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem(), Logger: quietPebble{}})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		st := store.New(db, 1)
		var index uint64
		// apply proposes cmd stamped at stamp, appended by the leader at
		// real time appended.
		apply := func(cmd *storepb.Command, stamp, appended int64) {
			cmd.Version, cmd.TimeMs = store.CommandVersion, stamp
			data := marshalCmd(t, cmd)
			if restamped {
				restamp(data, appended)
			}
			b := db.NewIndexedBatch()
			index++
			r, err := st.Apply(b, index, data)
			if err != nil {
				t.Fatal(err)
			}
			if res := r.(*store.Result); res.Err != nil {
				t.Fatalf("command %d: %v", index, res.Err)
			}
			if err := b.Commit(pebble.NoSync); err != nil {
				t.Fatal(err)
			}
			st.Committed()
		}
		applyTime := func() int64 {
			v, closer, err := db.Get(keys.ShardMeta(1))
			if err != nil {
				t.Fatal(err)
			}
			defer closer.Close()
			sm := &storepb.ShardMeta{}
			if err := proto.Unmarshal(v, sm); err != nil {
				t.Fatal(err)
			}
			return sm.LastTimeMs
		}
		real := int64(1_796_000_000_000)
		attrs := store.DefaultAttributes()
		attrs.VisibilityTimeoutMs = 30_000
		apply(&storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{Tenant: "t", Name: "a",
			Attributes: attrs, HandleKey: make([]byte, 32)}}}, real, real)
		sendAt, worst := real-100, int64(0)
		for range 40 {
			real += 5
			apply(&storepb.Command{Op: &storepb.Command_Receive{Receive: &storepb.Receive{Tenant: "t", Queue: "a",
				MaxMessages: 1, VisibilityTimeoutMs: 30_000}}}, real, real)
			for k := 0; k < 10 && sendAt < real; k++ {
				sendAt++
				apply(&storepb.Command{Op: &storepb.Command_Send{Send: &storepb.Send{Tenant: "t", Queue: "a",
					Entries: []*storepb.SendEntry{{Body: "x", DelayMs: -1}}}}}, sendAt, real)
			}
			worst = max(worst, applyTime()-real)
		}
		return worst
	}
	if got := ahead(false); got < 100 {
		t.Fatalf("stamps read at Propose ran apply time %d ms ahead; the scenario no longer shows the drift it guards against", got)
	}
	if got := ahead(true); got > 0 {
		t.Fatalf("restamped in log order, apply time ran %d ms ahead of the clock", got)
	}
}

type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
