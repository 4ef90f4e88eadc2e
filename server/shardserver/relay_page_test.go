package shardserver

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// A relay page holds at least one entry and stops before the entry that
// would take it past its byte bound.
func TestRelayPageBytes(t *testing.T) {
	es := make([]*storepb.OutboxEntry, 5)
	for i := range es {
		es[i] = &storepb.OutboxEntry{Id: uint64(i + 1), Message: &storepb.MessageRecord{Body: strings.Repeat("x", 1000)}}
	}
	one := proto.Size(es[0])
	for _, tc := range []struct{ max, want int }{{0, 1}, {one, 1}, {2*one + 1, 2}, {5 * one, 5}, {1 << 20, 5}} {
		if got := pageBytes(es, tc.max); got != tc.want {
			t.Errorf("pageBytes(5 × %d B, %d) = %d, want %d", one, tc.max, got, tc.want)
		}
	}
}

// The relay's tail moves only past sweeps that left nothing behind: a pass
// woken by new entries starts there, so nothing unsettled is ever below it.
func TestRelayTailOnlyAfterCleanSweeps(t *testing.T) {
	hk := &housekeeper{}
	hk.sweepClean, hk.cursor = true, 50
	hk.endSweep()
	if hk.tail != 50 || hk.cursor != 0 {
		t.Fatalf("clean sweep to 50: tail %d cursor %d, want 50 and 0", hk.tail, hk.cursor)
	}
	hk.sweepClean, hk.cursor = false, 80
	hk.endSweep()
	if hk.tail != 50 || hk.cursor != 0 {
		t.Fatalf("sweep to 80 that left an entry behind: tail %d cursor %d, want 50 and 0", hk.tail, hk.cursor)
	}
}
