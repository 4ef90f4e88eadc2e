package server

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
