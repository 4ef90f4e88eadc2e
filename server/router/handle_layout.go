package router

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// A receipt handle names the shard that issued it. After `cluster
// add-shards`, a router whose view of the shard count is behind (a
// storage node between membership passes, an API node between view
// refreshes) meets handles of shards it does not know yet. Such a handle
// makes it read the shard layout from the metadata shard's leader (a read
// barrier, then the layout record: peerShardLayoutMethod) and route again;
// only a shard still unknown after that read is invalid.
//
// The router cannot check a handle's MAC (the handle key of a queue never
// leaves its replicas), so a forged handle that parses could name any
// shard. Bounds: only a handle that parses (version, length, partition)
// and names a shard below store.MaxShards refreshes; a call refreshes at
// most once whatever its number of handles; concurrent callers share one
// read; and reads start at least layoutGap apart, so garbage handles cost
// at most 1/layoutGap reads of the metadata shard per router.

// peerShardLayoutMethod reads the shard layout record on the metadata
// shard's leader (peer service; any peer may call it).
const peerShardLayoutMethod = "/" + server.PeerService + "/ShardLayout"

// layoutGap is the least time between the starts of two layout reads.
const layoutGap = 100 * time.Millisecond

// layoutFlight shares the layout reads of concurrent callers.
type layoutFlight struct {
	mu   sync.Mutex
	last *layoutRun // the read under way, or the last one
}

// layoutRun is one layout read. started and done are set before it is
// published; err is written before done is closed.
type layoutRun struct {
	started   time.Time
	done      chan struct{}
	err       error
	abandoned bool // its caller's context ended: the read proves nothing
}

func (l *layoutRun) finished() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// refreshLayout makes the router's shard count at least as new as the
// metadata shard's layout record at some moment after since, unless known
// (the caller's shard is known) turns true meanwhile: it shares a read
// that starts at or after since, else waits for the one under way and
// starts the next (at least layoutGap after the last started). It runs on
// the caller's context; a read abandoned by its caller is made again by
// the next one.
func (r *Router) refreshLayout(ctx context.Context, since time.Time, known func() bool) error {
	f := &r.layout
	for {
		f.mu.Lock()
		run := f.last
		if run != nil && (!run.finished() || (!run.abandoned && !run.started.Before(since))) {
			f.mu.Unlock()
			select {
			case <-run.done:
			case <-ctx.Done():
				return fmt.Errorf("refresh the shard layout: %w", ctx.Err())
			}
			switch {
			case known():
				return nil
			case run.started.Before(since), run.abandoned:
				continue // too old for this caller, or proves nothing: the next one
			}
			return run.err
		}
		if known() { // a read that finished since the caller looked
			f.mu.Unlock()
			return nil
		}
		start := time.Now()
		if run != nil {
			start = later(start, run.started.Add(layoutGap))
		}
		run = &layoutRun{started: start, done: make(chan struct{})}
		f.last = run
		f.mu.Unlock()
		run.err = r.runLayoutRead(ctx, start)
		run.abandoned = ctx.Err() != nil
		close(run.done)
		return run.err
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// runLayoutRead waits until start, reads the layout and applies it.
func (r *Router) runLayoutRead(ctx context.Context, start time.Time) error {
	if d := time.Until(start); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("refresh the shard layout: %w", ctx.Err())
		case <-t.C:
		}
	}
	read := r.readLayout
	if read == nil {
		read = r.metadataLayout
	}
	l, err := read(ctx)
	if err != nil {
		return fmt.Errorf("refresh the shard layout: %w", err)
	}
	if l.GetShards() > 0 && l.GetBaseShards() > 0 { // a record always has both: the base places the older queues
		r.SetLayout(int(l.GetShards()), int(l.GetBaseShards()))
	}
	return nil
}

// metadataLayout reads the shard layout record on the metadata shard's
// leader (an empty record: the cluster never added shards), retrying on a
// new leader until ctx ends (or the router's timeout, without a deadline).
func (r *Router) metadataLayout(ctx context.Context) (*storepb.ShardLayout, error) {
	return leaderCall(ctx, r, MetadataShard, peerShardLayoutMethod, &storepb.ShardLayout{},
		func() *storepb.ShardLayout { return &storepb.ShardLayout{} },
		func(srv *shardserver.Server, ctx context.Context, _ *storepb.ShardLayout) (*storepb.ShardLayout, error) {
			return leaderLayout(ctx, srv)
		})
}

// leaderLayout reads the layout record of the metadata shard, which srv
// serves and this node leads, after a read barrier (so an AddShards
// acknowledged anywhere is in it).
func leaderLayout(ctx context.Context, srv *shardserver.Server) (*storepb.ShardLayout, error) {
	if err := srv.Raft().ReadIndex(ctx, MetadataShard); err != nil {
		return nil, server.ToStatus(fmt.Errorf("shard layout: read index: %w", err))
	}
	l, err := srv.Store().ShardLayout()
	if err != nil {
		return nil, server.ToStatus(fmt.Errorf("shard layout: %w", err))
	}
	if l == nil {
		return &storepb.ShardLayout{}, nil
	}
	return l, nil
}

// shardLayout serves peerShardLayoutMethod on the metadata shard's leader.
func (p *PeerServer) shardLayout(ctx context.Context, _ *storepb.ShardLayout) (*storepb.ShardLayout, error) {
	srv, err := p.metadataAddressed(ctx, "the shard layout lives")
	if err != nil {
		return nil, err
	}
	return leaderLayout(ctx, srv)
}

// handleRouter routes the handles of one call: the first handle naming a
// shard the router does not know refreshes the layout, once for the call.
type handleRouter struct {
	r         *Router
	refreshed bool
	err       error // the refresh's: the unknown shards of this call fail with it
}

// target addresses the partition that issued a receipt handle. A handle
// that does not parse, or names a shard that does not exist (after one
// layout refresh), goes to partition 0, whose shard validates the whole
// request and answers for it as for any bad handle.
func (hr *handleRouter) target(ctx context.Context, field, tenant, queue, handle string) (target, string, error) {
	r := hr.r
	b, err := shardserver.DecodeHandle(field, handle)
	if err != nil {
		return target{}, "", err
	}
	h, err := store.ParseHandle(b)
	if err != nil || h.Shard >= store.MaxShards {
		return hr.partition0(ctx, tenant, queue), queue, nil
	}
	if h.Shard >= uint64(r.shardCount()) && r.shardCount() > 0 && !hr.refreshed {
		hr.refreshed = true
		hr.err = r.refreshLayout(ctx, time.Now(), func() bool { return h.Shard < uint64(r.shardCount()) })
		if status.Code(hr.err) == codes.Unimplemented {
			hr.err = nil // a metadata leader of an older version (an upgrade under way): as before
		}
	}
	if h.Shard >= uint64(r.shardCount()) {
		if hr.err != nil {
			return target{}, "", hr.err // unknown for want of an answer, not invalid
		}
		return hr.partition0(ctx, tenant, queue), queue, nil
	}
	return target{shard: h.Shard, partition: int(h.Partition)}, store.PartitionName(queue, int(h.Partition)), nil
}

// partition0 addresses partition 0 of the queue: the shard its record
// names (a queue made after shards were added), else the base placement
// (also for a queue that does not exist: that shard says so).
func (hr *handleRouter) partition0(ctx context.Context, tenant, queue string) target {
	if q, err := hr.r.queue(ctx, tenant, queue); err == nil {
		return target{shard: hr.r.partitionShard(tenant, q, 0)}
	}
	return target{shard: hr.r.shardOf(tenant, queue, 0)}
}
