// Package history keeps a node's recent message counts for the web
// console's charts: per (tenant, queue), the messages sent, received and
// deleted through this node's client API in fixed intervals over the last
// hour. The counts come from the calls' answers (Interceptor), so an API
// node, which stores nothing, still sees every call made through it.
//
// Memory is bounded: at most MaxQueues (tenant, queue) series of Buckets
// intervals each (about 12 KB a series); queues past the cap are counted
// under their tenant's OtherQueue. Nothing runs in the background: a call
// advances the ring to its own time.
package history

import (
	"sort"
	"sync"
	"time"
)

const (
	// Interval is the length of a bucket.
	Interval = 10 * time.Second
	// Buckets is how many intervals a series keeps (one hour).
	Buckets = 360
	// MaxQueues bounds the series a node keeps.
	MaxQueues = 1000
	// OtherQueue collects a tenant's queues past MaxQueues.
	OtherQueue = "_other"
)

// Kind is what a count counts.
type Kind int

// Kinds of count.
const (
	Sent Kind = iota
	Received
	Deleted
	kinds
)

// Bucket is one interval's counts. Length is Interval, or less for the
// current interval.
type Bucket struct {
	Start  time.Time
	Length time.Duration
	Counts [kinds]int64
}

type key struct{ tenant, queue string }

// series is a ring of Buckets intervals; slot i holds interval number
// epoch[i] (intervals since the Unix epoch), stale when older.
type series struct {
	epoch  [Buckets]int64
	counts [Buckets][kinds]int64
	last   int64 // newest interval counted
}

// Ring holds the series of one node. Safe for concurrent use.
type Ring struct {
	mu     sync.Mutex
	series map[key]*series
	max    int
}

// New returns an empty ring keeping at most maxQueues series (MaxQueues
// when <= 0).
func New(maxQueues int) *Ring {
	if maxQueues <= 0 {
		maxQueues = MaxQueues
	}
	return &Ring{series: map[key]*series{}, max: maxQueues}
}

func interval(t time.Time) int64 { return t.UnixNano() / int64(Interval) }

// Add counts n messages of kind for a tenant's queue at time now.
func (r *Ring) Add(now time.Time, tenant, queue string, k Kind, n int) {
	if n <= 0 || k < 0 || k >= kinds {
		return
	}
	iv := interval(now)
	r.mu.Lock()
	defer r.mu.Unlock()
	kk := key{tenant, queue}
	s := r.series[kk]
	if s == nil {
		if len(r.series) >= r.max {
			kk = key{tenant, OtherQueue}
			s = r.series[kk]
		}
		if s == nil {
			s = &series{}
			r.series[kk] = s
		}
	}
	slot := iv % Buckets
	if s.epoch[slot] != iv {
		s.epoch[slot] = iv
		s.counts[slot] = [kinds]int64{}
	}
	s.counts[slot][k] += int64(n)
	if iv > s.last {
		s.last = iv
	}
}

// QueueSeries is one queue's buckets, oldest first.
type QueueSeries struct {
	Queue   string
	Buckets []Bucket
}

// Query returns the last points buckets (up to now) of a tenant: the sum
// over its queues (only queue, when not empty) and, with perQueue, each
// queue's own series, busiest (most counted in the window) first. Series
// with nothing in the window are left out.
func (r *Ring) Query(now time.Time, tenant, queue string, points int, perQueue bool) (total []Bucket, queues []QueueSeries) {
	if points <= 0 || points > Buckets {
		points = Buckets
	}
	cur := interval(now)
	first := cur - int64(points) + 1
	total = window(now, first, cur)
	type found struct {
		name string
		b    []Bucket
		sum  int64
	}
	var per []found
	r.mu.Lock()
	for k, s := range r.series {
		if k.tenant != tenant || (queue != "" && k.queue != queue) || s.last < first {
			continue
		}
		var b []Bucket
		if perQueue {
			b = window(now, first, cur)
		}
		var sum int64
		for iv := max(first, s.last-Buckets+1); iv <= min(cur, s.last); iv++ {
			slot := iv % Buckets
			if s.epoch[slot] != iv {
				continue
			}
			i := iv - first
			for kd := range kinds {
				total[i].Counts[kd] += s.counts[slot][kd]
				if perQueue {
					b[i].Counts[kd] += s.counts[slot][kd]
				}
				sum += s.counts[slot][kd]
			}
		}
		if perQueue && sum > 0 {
			per = append(per, found{k.queue, b, sum})
		}
	}
	r.mu.Unlock()
	sort.Slice(per, func(i, j int) bool {
		if per[i].sum != per[j].sum {
			return per[i].sum > per[j].sum
		}
		return per[i].name < per[j].name
	})
	for _, f := range per {
		queues = append(queues, QueueSeries{Queue: f.name, Buckets: f.b})
	}
	return total, queues
}

// window returns empty buckets for intervals first..cur; the last one's
// length is the part of it that has passed.
func window(now time.Time, first, cur int64) []Bucket {
	out := make([]Bucket, cur-first+1)
	for i := range out {
		out[i].Start = time.Unix(0, (first+int64(i))*int64(Interval)).UTC()
		out[i].Length = Interval
	}
	last := &out[len(out)-1]
	last.Length = now.Sub(last.Start)
	return out
}
