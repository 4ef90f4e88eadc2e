package shardserver

import (
	"math/rand/v2"
	"testing"
	"time"
)

// Whatever the callers ask, with leases or without, the tokens a bucket
// hands out in any window of T plus the leases still held at its start
// are at most burst + rate*T: a router using its leases late cannot push
// a window past that. A demand above the rate still gets nearly all of it.
func TestTokenBucketBoundsEveryWindow(t *testing.T) {
	const perSecond = 200
	rng := rand.New(rand.NewPCG(1, 2))
	type grant struct {
		at, expires time.Time
		n           int
	}
	start := time.UnixMilli(1_800_000_000_000)
	b := newTokenBucket(perSecond, start)
	var grants []grant
	now := start
	for now.Sub(start) < 60*time.Second {
		now = now.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
		need, extra := 1+rng.IntN(120), rng.IntN(60)
		ttl := time.Duration(0)
		if rng.IntN(2) == 0 {
			ttl = LeaseTTL
		}
		got, retry := b.take(need, extra, ttl, now)
		if got < need && retry <= 0 {
			t.Fatalf("short grant (%d of %d) without a retry delay", got, need)
		}
		grants = append(grants, grant{now, now.Add(ttl), got})
	}
	for _, T := range []time.Duration{time.Second, 10 * time.Second} {
		for _, from := range grants {
			s, e := from.at, from.at.Add(T)
			if e.After(now) {
				break
			}
			sum := 0
			for _, g := range grants {
				if !g.at.Before(s) && g.at.Before(e) {
					sum += g.n
				} else if g.at.Before(s) && g.expires.After(s) {
					sum += g.n // still leased at the window's start
				}
			}
			limit := perSecond + perSecond*T.Seconds()
			if float64(sum) > limit {
				t.Fatalf("window of %v from %v: %d tokens, want at most %v", T, s.Sub(start), sum, limit)
			}
			if T == 10*time.Second && float64(sum) < 0.9*perSecond*T.Seconds() {
				t.Fatalf("window of %v from %v: %d tokens for a demand far above the rate", T, s.Sub(start), sum)
			}
		}
	}
}

// A quota change applies at once and never leaves more tokens than the
// new burst.
func TestTokenBucketRateChange(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	b := newTokenBucket(100, now)
	b.setRate(10, now)
	if got, _ := b.take(100, 0, 0, now); got != 10 {
		t.Fatalf("after lowering the rate to 10/s: %d tokens, want 10", got)
	}
	if got, retry := b.take(1, 0, 0, now); got != 0 || retry != 100*time.Millisecond {
		t.Fatalf("empty bucket at 10/s: got %d, retry %v; want 0, 100ms", got, retry)
	}
}
