package keys

import "fmt"

// Access keys of the SQS endpoint live in the metadata shard under kind
// 0x09: the record by id (the SigV4 verifier's lookup is one Get), and a
// per-tenant index (list and count a tenant's keys with one bounded scan).
const (
	accessKeyByID     byte = 'k'
	accessKeyByTenant byte = 't'
)

// AccessKey is the key of an access key's record.
func AccessKey(shard uint64, id string) []byte {
	return AppendString(append(stateKey(shard, stateAccessKey), accessKeyByID), id)
}

// TenantAccessKeyPrefix bounds a tenant's access keys, in id order.
func TenantAccessKeyPrefix(shard uint64, tenant string) []byte {
	return AppendString(append(stateKey(shard, stateAccessKey), accessKeyByTenant), tenant)
}

// TenantAccessKey is the tenant index entry of access key id.
func TenantAccessKey(shard uint64, tenant, id string) []byte {
	return AppendString(TenantAccessKeyPrefix(shard, tenant), id)
}

// DecodeAccessKey parses an AccessKey key.
func DecodeAccessKey(k []byte) (shard uint64, id string, err error) {
	shard, rest, err := readStateKind(k, stateAccessKey)
	if err != nil || len(rest) == 0 || rest[0] != accessKeyByID {
		return 0, "", ErrMalformed
	}
	id, rest, err = ReadString(rest[1:])
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, "", ErrMalformed
	}
	return shard, id, nil
}

// DecodeTenantAccessKey parses a TenantAccessKey key.
func DecodeTenantAccessKey(k []byte) (shard uint64, tenant, id string, err error) {
	shard, rest, err := readStateKind(k, stateAccessKey)
	if err != nil || len(rest) == 0 || rest[0] != accessKeyByTenant {
		return 0, "", "", ErrMalformed
	}
	tenant, rest, err = ReadString(rest[1:])
	if err == nil {
		id, rest, err = ReadString(rest)
	}
	if err == nil {
		err = noTrailing(rest)
	}
	if err != nil {
		return 0, "", "", ErrMalformed
	}
	return shard, tenant, id, nil
}

func prettyAccessKey(k []byte) string {
	if _, id, err := DecodeAccessKey(k); err == nil {
		return fmt.Sprintf("/accesskey/%q", id)
	}
	if _, t, id, err := DecodeTenantAccessKey(k); err == nil {
		return fmt.Sprintf("/accesskey-of/%q/%q", t, id)
	}
	return fmt.Sprintf("/%x", k[len(StatePrefix(0)):])
}
