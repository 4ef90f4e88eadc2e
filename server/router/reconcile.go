package router

import (
	"context"
	"fmt"

	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// QueueRecord implements Catalog.
func (r *Router) QueueRecord(ctx context.Context, tenant, name string) (*storepb.QueueRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	leader, err := r.cfg.View.Leader(ctx, MetadataShard)
	if err != nil {
		return nil, err
	}
	if srv := r.localServer(MetadataShard); srv != nil && leader == r.cfg.Self {
		return srv.QueueRecord(ctx, tenant, name)
	}
	if r.cfg.Forwarder == nil {
		return nil, fmt.Errorf("no route to shard %d", MetadataShard)
	}
	out := &storepb.QueueRecord{}
	err = r.cfg.Forwarder.invoke(ctx, leader, shardserver.PeerRecordMethod, &storepb.QueueRecord{Tenant: tenant, Name: name}, out,
		server.ShardHeader, fmt.Sprint(MetadataShard))
	switch {
	case err == nil:
		return out, nil
	case server.ReasonOf(err) == server.ReasonQueueNotFound:
		return nil, fmt.Errorf("%w: %s", store.ErrQueueNotFound, name)
	}
	if hint, ok := retryable(err); ok {
		r.cfg.View.Hint(MetadataShard, hint)
	}
	return nil, err
}

// queueRecord serves peerRecordMethod.
func (p *PeerServer) queueRecord(ctx context.Context, req *storepb.QueueRecord) (*storepb.QueueRecord, error) {
	srv, err := p.router.serving(ctx, MetadataShard)
	if err != nil {
		return nil, err
	}
	rec, err := srv.QueueRecord(ctx, req.GetTenant(), req.GetName())
	return rec, server.ToStatus(err)
}
