package store

import (
	"sort"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Tenant usage (queues, stored bytes) is kept in one record per tenant so
// that quota checks are one read, not a scan of the tenant's queues. A
// command loads each record it touches once and writes it back at the end
// (flushTenants), in tenant order so replicas write identical batches.

// tenant returns the tenant's record, cached for the rest of the command.
func (t *txn) tenant(name string) (*storepb.TenantRecord, error) {
	if rec, ok := t.tenants[name]; ok {
		return rec, nil
	}
	rec := &storepb.TenantRecord{}
	if _, err := t.get(keys.Tenant(t.s.shard, name), rec); err != nil {
		return nil, err
	}
	if t.tenants == nil {
		t.tenants = map[string]*storepb.TenantRecord{}
	}
	t.tenants[name] = rec
	return rec, nil
}

// addUsage changes a tenant's counted queues and stored bytes.
func (t *txn) addUsage(name string, queues, bytes int64) error {
	rec, err := t.tenant(name)
	if err != nil {
		return err
	}
	rec.Queues += queues
	rec.StoredBytes += bytes
	if t.dirtyTenants == nil {
		t.dirtyTenants = map[string]bool{}
	}
	t.dirtyTenants[name] = true
	return nil
}

// flushTenants writes the records changed by the command.
func (t *txn) flushTenants() error {
	names := make([]string, 0, len(t.dirtyTenants))
	for n := range t.dirtyTenants {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := t.set(keys.Tenant(t.s.shard, n), t.tenants[n]); err != nil {
			return err
		}
	}
	return nil
}

// roomForQueue reports whether the tenant may create one more queue.
func (t *txn) roomForQueue(name string) (bool, error) {
	rec, err := t.tenant(name)
	if err != nil {
		return false, err
	}
	max := rec.GetQuota().GetMaxQueues()
	return max <= 0 || rec.Queues < max, nil
}

// roomForBytes reports whether the tenant may store size more bytes.
func (t *txn) roomForBytes(name string, size int64) (bool, error) {
	rec, err := t.tenant(name)
	if err != nil {
		return false, err
	}
	max := rec.GetQuota().GetMaxStoredBytes()
	return max <= 0 || rec.StoredBytes+size <= max, nil
}

func (t *txn) setTenantQuota(op *storepb.SetTenantQuota, res *Result) error {
	res.Tenant = op.Tenant
	q := op.GetQuota()
	switch {
	case op.Tenant == "":
		res.Err = fieldErr("tenant", "empty")
		return nil
	case q.GetMaxQueues() < 0:
		res.Err = fieldErr("quota.max_queues", "must not be negative")
		return nil
	case q.GetMaxSendRate() < 0:
		res.Err = fieldErr("quota.max_send_rate", "must not be negative")
		return nil
	case q.GetMaxStoredBytes() < 0:
		res.Err = fieldErr("quota.max_stored_bytes", "must not be negative")
		return nil
	}
	rec, err := t.tenant(op.Tenant)
	if err != nil {
		return err
	}
	rec.Quota = &storepb.TenantQuota{MaxQueues: q.GetMaxQueues(), MaxSendRate: q.GetMaxSendRate(), MaxStoredBytes: q.GetMaxStoredBytes()}
	if err := t.addUsage(op.Tenant, 0, 0); err != nil {
		return err
	}
	res.Tenant = op.Tenant
	res.TenantRecord = rec
	return nil
}

// Tenant returns a tenant's quota and usage as this replica has them (a
// zero record for a tenant never seen).
func (s *Store) Tenant(name string) (*storepb.TenantRecord, error) {
	return s.reader(0).tenant(name)
}
