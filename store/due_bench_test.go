package store

import (
	"fmt"
	"math"
	"testing"
)

// BenchmarkNeedsTickAfterDeletes: NeedsTick + Depths on a shard whose busy
// queue had n messages sent and deleted (tombstones at its head) beside 8
// idle queues. Their cost must not grow with n.
func BenchmarkNeedsTickAfterDeletes(b *testing.B) {
	for _, n := range []int{1_000, 50_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h := newHarness(b)
			h.now = 1_000_000
			h.run("create q=busy")
			for i := range 8 {
				h.run(fmt.Sprintf("create q=idle%d", i))
			}
			h.sendReceiveDelete("busy", n)
			h.run("send q=busy body=live")
			before := h.s.KeysRead() + h.s.PointsRead()
			b.ResetTimer()
			for range b.N {
				if _, err := h.s.NeedsTick(h.now); err != nil {
					b.Fatal(err)
				}
				if err := h.s.Depths(h.now, 0, func(QueueDepth) bool { return true }); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(h.s.KeysRead()+h.s.PointsRead()-before)/float64(b.N), "reads/op")
		})
	}
}

// BenchmarkPeekAfterConsumed: a long poll's Peek on a queue whose n
// messages were received and deleted within their visibility timeout
// (their tombstones lie ahead of now, at their leases' ends), looking 1 s
// ahead as long polls do, and without a bound as Peek did before.
func BenchmarkPeekAfterConsumed(b *testing.B) {
	for _, n := range []int{1_000, 20_000} {
		for _, bound := range []struct {
			name  string
			ahead int64
		}{{"1s", 1000}, {"unbounded", math.MaxInt64}} {
			b.Run(fmt.Sprintf("n=%d/%s", n, bound.name), func(b *testing.B) {
				h := newHarness(b)
				h.now = 1_000_000
				h.run("create q=a")
				h.sendReceiveDelete("a", n)
				until := h.now + bound.ahead
				if bound.ahead == math.MaxInt64 {
					until = math.MaxInt64
				}
				b.ResetTimer()
				for range b.N {
					if _, _, err := h.s.Peek("t", "a", nil, h.now, until); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
