package store

import (
	"testing"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
	"google.golang.org/protobuf/proto"
)

// The lease flag byte packs three things: bit 0 plain, bit 1 lease closed,
// high nibble priority + 1. Each reader must see its own part only,
// whatever the others hold.
func TestLeaseFlagByteParts(t *testing.T) {
	for p := int32(-1); p <= MaxPriority; p++ {
		for _, plain := range []bool{false, true} {
			for _, closed := range []bool{false, true} {
				m := &storepb.MessageRecord{Seq: 7, Size: 3, LeaseClosed: closed, ReceiveCount: 2}
				if p >= 0 {
					m.Priority = proto.Int32(p)
				}
				if !plain {
					m.Tags = []string{"t"}
				}
				f := leasePriority(m)
				if plain {
					f |= leasePlain
				}
				if closed {
					f |= leaseClosed
				}
				got := priorityFromLease(f)
				if (got == nil) != (m.Priority == nil) || (got != nil && *got != *m.Priority) {
					t.Errorf("priority %d plain %v closed %v: flag %08b reads priority %v", p, plain, closed, f, got)
				}
				if (f&leasePlain != 0) != plain || (f&leaseClosed != 0) != closed {
					t.Errorf("priority %d plain %v closed %v: flag %08b", p, plain, closed, f)
				}
				v := make([]byte, leaseLen)
				v[28] = f
				back := &storepb.MessageRecord{Seq: 7}
				if err := applyLease(back, v); err != nil {
					t.Fatal(err)
				}
				if back.LeaseClosed != closed {
					t.Errorf("priority %d plain %v closed %v: applyLease reads closed %v", p, plain, closed, back.LeaseClosed)
				}
			}
		}
	}
}
