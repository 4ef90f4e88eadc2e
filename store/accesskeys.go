package store

import (
	"errors"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Access keys sign requests to the SQS endpoint (SigV4). They live in the
// metadata shard: the record by id (0x09 'k' id) for the verifier's one-Get
// lookup, and a per-tenant index (0x09 't' T id) to list and count a
// tenant's keys. The proposer draws the id and the secret; apply only
// checks and stores them. The secret is stored because SigV4 verification
// is an HMAC keyed by it (see DESIGN.md, "Access keys").

// MaxAccessKeysPerTenant bounds a tenant's keys, so listing and counting
// them is one bounded scan.
const MaxAccessKeysPerTenant = 100

var (
	// ErrAccessKeyNotFound: the tenant has no key of that id
	// (ACCESS_KEY_NOT_FOUND). Another tenant's key is not found either.
	ErrAccessKeyNotFound = errors.New("access key not found")
	// ErrAccessKeyExists: PutAccessKey named an id in use (the proposer
	// draws 80 random bits, so this means a retried or forged command).
	ErrAccessKeyExists = errors.New("access key id in use")
)

// Bounds of an access key's fields (the server checks them first; apply
// checks again so that no command stores garbage).
const (
	maxAccessKeyID     = 128
	maxAccessKeySecret = 128
	maxAccessKeyScopes = 8
	maxAccessKeyText   = 256
)

func (t *txn) putAccessKey(op *storepb.PutAccessKey, res *Result) error {
	k := op.GetKey()
	res.Tenant = k.GetTenant()
	if err := checkAccessKey(k); err != nil {
		res.Err = err
		return nil
	}
	found, err := t.get(keys.AccessKey(t.s.shard, k.AccessKeyId), nil)
	if err != nil {
		return err
	}
	if found {
		res.Err = ErrAccessKeyExists
		return nil
	}
	n, err := t.countAccessKeys(k.Tenant)
	if err != nil {
		return err
	}
	if n >= MaxAccessKeysPerTenant {
		res.Err = ErrQuotaExceeded
		return nil
	}
	if err := t.set(keys.AccessKey(t.s.shard, k.AccessKeyId), k); err != nil {
		return err
	}
	return t.setRaw(keys.TenantAccessKey(t.s.shard, k.Tenant, k.AccessKeyId), nil)
}

func checkAccessKey(k *storepb.AccessKeyRecord) error {
	switch {
	case k == nil:
		return fieldErr("key", "missing")
	case k.Tenant == "" || len(k.Tenant) > maxAccessKeyText:
		return fieldErr("key.tenant", "must be 1 to 256 bytes")
	case k.AccessKeyId == "" || len(k.AccessKeyId) > maxAccessKeyID:
		return fieldErr("key.access_key_id", "must be 1 to 128 bytes")
	case k.SecretAccessKey == "" || len(k.SecretAccessKey) > maxAccessKeySecret:
		return fieldErr("key.secret_access_key", "must be 1 to 128 bytes")
	case len(k.Scopes) == 0 || len(k.Scopes) > maxAccessKeyScopes:
		return fieldErr("key.scopes", "must name 1 to 8 scopes")
	case len(k.Description) > maxAccessKeyText:
		return fieldErr("key.description", "longer than 256 bytes")
	}
	return nil
}

// countAccessKeys counts the tenant's keys, reading at most
// MaxAccessKeysPerTenant index entries.
func (t *txn) countAccessKeys(tenant string) (n int, err error) {
	p := keys.TenantAccessKeyPrefix(t.s.shard, tenant)
	it, err := t.iter(p, keys.PrefixEnd(p))
	if err != nil {
		return 0, err
	}
	defer closeInto(it, &err)
	for ok := it.First(); ok && n < MaxAccessKeysPerTenant; ok = it.Next() {
		n++
	}
	return n, nil
}

func (t *txn) revokeAccessKey(op *storepb.RevokeAccessKey, res *Result) error {
	res.Tenant = op.GetTenant()
	rec := &storepb.AccessKeyRecord{}
	found, err := t.get(keys.AccessKey(t.s.shard, op.GetAccessKeyId()), rec)
	if err != nil {
		return err
	}
	if !found || rec.Tenant != op.GetTenant() {
		res.Err = ErrAccessKeyNotFound
		return nil
	}
	if err := t.del(keys.AccessKey(t.s.shard, rec.AccessKeyId)); err != nil {
		return err
	}
	return t.del(keys.TenantAccessKey(t.s.shard, rec.Tenant, rec.AccessKeyId))
}

// AccessKey returns a key's record as this replica has it, secret included,
// or ErrAccessKeyNotFound.
func (s *Store) AccessKey(id string) (*storepb.AccessKeyRecord, error) {
	rec := &storepb.AccessKeyRecord{}
	found, err := s.reader(0).get(keys.AccessKey(s.shard, id), rec)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrAccessKeyNotFound
	}
	return rec, nil
}

// AccessKeys returns the tenant's keys in id order (at most
// MaxAccessKeysPerTenant), without their secrets.
func (s *Store) AccessKeys(tenant string) (out []*storepb.AccessKeyRecord, err error) {
	t, done := s.snapshot(0)
	defer done()
	p := keys.TenantAccessKeyPrefix(s.shard, tenant)
	it, err := t.iter(p, keys.PrefixEnd(p))
	if err != nil {
		return nil, err
	}
	defer closeInto(it, &err)
	for ok := it.First(); ok && len(out) < MaxAccessKeysPerTenant; ok = it.Next() {
		_, _, id, err := keys.DecodeTenantAccessKey(it.Key())
		if err != nil {
			return nil, err
		}
		rec := &storepb.AccessKeyRecord{}
		found, err := t.get(keys.AccessKey(s.shard, id), rec)
		if err != nil {
			return nil, err
		}
		if !found {
			continue // cannot happen: both keys change in one batch
		}
		rec.SecretAccessKey = ""
		out = append(out, rec)
	}
	return out, nil
}
