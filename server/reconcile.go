package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// The reconciler keeps partition copies in step with their records of
// truth. A queue call changes the record on the metadata shard first and
// then fans out to the partitions; a fan-out that stops half way (a node
// down, a deadline) leaves a copy behind: an orphan of a deleted queue
// whose bytes still count against the tenant, or a partition on old
// attributes while GetQueue shows the new ones. Each shard leader walks
// its partition copies every ReconcileInterval and, against a fresh read
// of the record:
//   - record gone: the copy is deleted (conditionally on its incarnation,
//     so a queue re-created meanwhile is never hit);
//   - record of a newer incarnation: the copy is replaced by a new one;
//   - attributes differ: the copy takes the record's attributes.
//
// A partition missing altogether is made by the router on first use
// (withPartition). Every repair is an idempotent command, so two leaders
// (old and new) repairing at once do no harm.

// Catalog is what a shard asks of the cluster's records of truth.
type Catalog interface {
	// QueueRecord reads the record of truth of (tenant, name) from the
	// metadata shard's leader after a read barrier; an error that
	// errors.Is store.ErrQueueNotFound when there is none.
	QueueRecord(ctx context.Context, tenant, name string) (*storepb.QueueRecord, error)
}

var _ Catalog = (*Router)(nil)

// peerRecordMethod reads a record of truth from the metadata shard's
// leader for another node's housekeeping (which holds no client token).
const peerRecordMethod = "/" + peerService + "/QueueRecord"

const (
	// reconcilePage bounds the catalog entries read at once.
	reconcilePage = 200
	// reconcileBudget bounds the copies one pass looks at.
	reconcileBudget = 500
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
		return srv.queueRecord(ctx, tenant, name)
	}
	if r.cfg.Forwarder == nil {
		return nil, fmt.Errorf("no route to shard %d", MetadataShard)
	}
	out := &storepb.QueueRecord{}
	err = r.cfg.Forwarder.invoke(ctx, leader, peerRecordMethod, &storepb.QueueRecord{Tenant: tenant, Name: name}, out,
		shardHeader, fmt.Sprint(MetadataShard))
	switch {
	case err == nil:
		return out, nil
	case reasonOf(err) == ReasonQueueNotFound:
		return nil, fmt.Errorf("%w: %s", store.ErrQueueNotFound, name)
	}
	if hint, ok := retryable(err); ok {
		r.cfg.View.Hint(MetadataShard, hint)
	}
	return nil, err
}

// queueRecord answers a record of truth of this (metadata) shard after a
// read barrier, without its handle key.
func (s *Server) queueRecord(ctx context.Context, tenant, name string) (*storepb.QueueRecord, error) {
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	info, err := s.store.Queue(tenant, name)
	if err != nil {
		return nil, withQueue(err, name)
	}
	return info.Record, nil
}

// queueRecord serves peerRecordMethod.
func (p *PeerServer) queueRecord(ctx context.Context, req *storepb.QueueRecord) (*storepb.QueueRecord, error) {
	srv, err := p.router.serving(ctx, MetadataShard)
	if err != nil {
		return nil, err
	}
	rec, err := srv.queueRecord(ctx, req.GetTenant(), req.GetName())
	return rec, toStatus(err)
}

// reconcile walks on through this shard's partition copies (see above)
// from where the last pass stopped, for at most reconcileBudget copies, so
// that one pass never holds up expiry and the relay for long. A failed
// record read ends the pass (the metadata shard may be unreachable: every
// further read would wait for its deadline too).
func (s *Server) reconcile(ctx context.Context) {
	c, err := s.catalog()
	if err != nil {
		return
	}
	records := map[store.QueueRef]*storepb.QueueRecord{} // read once per pass
	for done := 0; done < reconcileBudget && ctx.Err() == nil && s.leading(); {
		copies, last, err := s.store.PartitionCopies(s.hk.reconcileAfter, reconcilePage)
		if err != nil {
			s.cfg.Logger.Error("reconcile: catalog read failed", "shard", s.shard, "err", err)
			return
		}
		for _, cp := range copies {
			if ctx.Err() != nil || !s.leading() {
				return
			}
			if err := s.reconcileCopy(ctx, c, cp, records); err != nil {
				s.cfg.Logger.Warn("reconcile: partition not repaired", "shard", s.shard,
					"tenant", cp.GetTenant(), "queue", cp.GetName(), "err", err)
				return // this copy is looked at again by the next pass
			}
			s.hk.reconcileAfter = store.QueueRef{Tenant: cp.GetTenant(), Name: cp.GetName()}
			done++
		}
		s.hk.reconcileAfter = last // zero at the catalog's end: the next pass starts over
		if last == (store.QueueRef{}) {
			return
		}
	}
}

// reconcileCopy brings one partition copy in line with its record.
func (s *Server) reconcileCopy(ctx context.Context, c Catalog, cp *storepb.QueueRecord, records map[store.QueueRef]*storepb.QueueRecord) error {
	ref := store.QueueRef{Tenant: cp.GetTenant(), Name: store.BaseName(cp.GetName())}
	rec, cached := records[ref]
	if !cached {
		var err error
		rec, err = c.QueueRecord(ctx, ref.Tenant, ref.Name)
		if err != nil && !errors.Is(err, store.ErrQueueNotFound) {
			return err
		}
		records[ref] = rec // nil: no record
	}
	switch {
	case rec == nil || cp.GetPartition() >= max(rec.GetAttributes().GetPartitions(), 1):
		return s.dropCopy(ctx, cp, "its queue was deleted")
	case rec.GetCreatedAtMs() > cp.GetIncarnation():
		// A copy of an earlier queue of the same name: the create of the
		// new incarnation replaces it.
		s.cfg.Logger.Info("reconcile: replacing a partition of an earlier queue", "shard", s.shard,
			"tenant", cp.GetTenant(), "queue", cp.GetName())
		return s.syncCopy(ctx, c, cp, rec)
	case rec.GetCreatedAtMs() < cp.GetIncarnation():
		return nil // the record read is older than the copy: next pass
	case !proto.Equal(rec.GetAttributes(), cp.GetAttributes()):
		s.cfg.Logger.Info("reconcile: partition takes its record's attributes", "shard", s.shard,
			"tenant", cp.GetTenant(), "queue", cp.GetName())
		return s.syncCopy(ctx, c, cp, rec)
	}
	return nil
}

// dropCopy deletes an orphan partition copy, only if it is still the
// incarnation that was found orphaned.
func (s *Server) dropCopy(ctx context.Context, cp *storepb.QueueRecord, why string) error {
	s.cfg.Logger.Info("reconcile: deleting an orphan partition", "shard", s.shard,
		"tenant", cp.GetTenant(), "queue", cp.GetName(), "why", why)
	_, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_DeleteQueue{DeleteQueue: &storepb.DeleteQueue{
		Tenant: cp.GetTenant(), Name: cp.GetName(), Incarnation: cp.GetIncarnation(),
	}}})
	if errors.Is(err, store.ErrQueueNotFound) {
		err = nil
	}
	s.polls.wake(cp.GetTenant(), cp.GetName())
	return err
}

// syncCopy re-creates the copy from its record (idempotent: the store
// replaces an earlier incarnation and takes new attributes). An update of
// the record may race it; reading the record again afterwards and
// repeating once closes that window.
func (s *Server) syncCopy(ctx context.Context, c Catalog, cp *storepb.QueueRecord, rec *storepb.QueueRecord) error {
	for range 2 {
		key, err := newHandleKey()
		if err != nil {
			return err
		}
		if _, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_CreateQueue{CreateQueue: &storepb.CreateQueue{
			Tenant: cp.GetTenant(), Name: store.BaseName(cp.GetName()), Attributes: rec.GetAttributes(), Tags: rec.GetTags(),
			HandleKey: key, PartitionCopy: true, Partition: cp.GetPartition(), Incarnation: rec.GetCreatedAtMs(),
		}}}); err != nil {
			return err
		}
		again, err := c.QueueRecord(ctx, cp.GetTenant(), store.BaseName(cp.GetName()))
		if err != nil || again.GetCreatedAtMs() != rec.GetCreatedAtMs() || proto.Equal(again.GetAttributes(), rec.GetAttributes()) {
			return nil // gone, re-created or unchanged: the next pass sees it
		}
		rec = again
	}
	return nil
}
