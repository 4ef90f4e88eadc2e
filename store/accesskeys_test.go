package store

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

func (h *harness) putKey(tenant, id string) *Result {
	return h.apply(&storepb.Command{Op: &storepb.Command_PutAccessKey{PutAccessKey: &storepb.PutAccessKey{Key: &storepb.AccessKeyRecord{
		AccessKeyId: id, Tenant: tenant, SecretAccessKey: "secret-" + id, Scopes: []string{"messages:send"}, CreatedAtMs: 1000, Description: "d",
	}}}})
}

func (h *harness) revokeKey(tenant, id string) *Result {
	return h.apply(&storepb.Command{Op: &storepb.Command_RevokeAccessKey{RevokeAccessKey: &storepb.RevokeAccessKey{Tenant: tenant, AccessKeyId: id}}})
}

func keyIDs(t *testing.T, s *Store, tenant string) []string {
	t.Helper()
	recs, err := s.AccessKeys(tenant)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		if r.SecretAccessKey != "" {
			t.Fatalf("AccessKeys returned the secret of %s", r.AccessKeyId)
		}
		ids = append(ids, r.AccessKeyId)
	}
	return ids
}

// A key is stored with its secret, listed by its tenant only (in id order,
// without the secret), and gone from lookup and list once revoked.
func TestAccessKeyLifecycle(t *testing.T) {
	h := newHarness(t)
	for _, k := range []struct{ tenant, id string }{{"a", "K2"}, {"a", "K1"}, {"ab", "K3"}} {
		if r := h.putKey(k.tenant, k.id); r.Err != nil {
			t.Fatalf("put %s: %v", k.id, r.Err)
		}
	}
	rec, err := h.s.AccessKey("K1")
	if err != nil || rec.Tenant != "a" || rec.SecretAccessKey != "secret-K1" || !slices.Equal(rec.Scopes, []string{"messages:send"}) {
		t.Fatalf("AccessKey(K1) = %v, %v", rec, err)
	}
	if got := keyIDs(t, h.s, "a"); !slices.Equal(got, []string{"K1", "K2"}) {
		t.Fatalf("tenant a lists %v", got)
	}
	if got := keyIDs(t, h.s, "ab"); !slices.Equal(got, []string{"K3"}) {
		t.Fatalf("tenant ab lists %v", got)
	}
	// Another tenant cannot revoke it, and learns nothing from trying.
	if r := h.revokeKey("ab", "K1"); !errors.Is(r.Err, ErrAccessKeyNotFound) {
		t.Fatalf("revoke by another tenant: %v", r.Err)
	}
	if r := h.revokeKey("a", "K1"); r.Err != nil {
		t.Fatalf("revoke: %v", r.Err)
	}
	if _, err := h.s.AccessKey("K1"); !errors.Is(err, ErrAccessKeyNotFound) {
		t.Fatalf("lookup after revoke: %v", err)
	}
	if got := keyIDs(t, h.s, "a"); !slices.Equal(got, []string{"K2"}) {
		t.Fatalf("after revoke tenant a lists %v", got)
	}
	if r := h.revokeKey("a", "K1"); !errors.Is(r.Err, ErrAccessKeyNotFound) {
		t.Fatalf("second revoke: %v", r.Err)
	}
}

// An id in use is refused (not overwritten: a retried command must not
// replace a key's secret), and a tenant has at most MaxAccessKeysPerTenant.
func TestAccessKeyExistsAndLimit(t *testing.T) {
	h := newHarness(t)
	h.putKey("a", "K")
	if r := h.putKey("b", "K"); !errors.Is(r.Err, ErrAccessKeyExists) {
		t.Fatalf("duplicate id: %v", r.Err)
	}
	if rec, _ := h.s.AccessKey("K"); rec.GetTenant() != "a" {
		t.Fatalf("duplicate overwrote the key: %v", rec)
	}
	for i := 1; i < MaxAccessKeysPerTenant; i++ {
		if r := h.putKey("a", fmt.Sprintf("K%03d", i)); r.Err != nil {
			t.Fatalf("key %d: %v", i, r.Err)
		}
	}
	if r := h.putKey("a", "over"); !errors.Is(r.Err, ErrQuotaExceeded) {
		t.Fatalf("key past the limit: %v", r.Err)
	}
	if got := keyIDs(t, h.s, "a"); len(got) != MaxAccessKeysPerTenant {
		t.Fatalf("listed %d keys", len(got))
	}
	h.revokeKey("a", "K")
	if r := h.putKey("a", "over"); r.Err != nil {
		t.Fatalf("after a revoke: %v", r.Err)
	}
}

func TestAccessKeyValidation(t *testing.T) {
	h := newHarness(t)
	good := func() *storepb.AccessKeyRecord {
		return &storepb.AccessKeyRecord{AccessKeyId: "K", Tenant: "a", SecretAccessKey: "s", Scopes: []string{"messages:send"}}
	}
	for name, mut := range map[string]func(*storepb.AccessKeyRecord){
		"no tenant": func(k *storepb.AccessKeyRecord) { k.Tenant = "" },
		"no id":     func(k *storepb.AccessKeyRecord) { k.AccessKeyId = "" },
		"no secret": func(k *storepb.AccessKeyRecord) { k.SecretAccessKey = "" },
		"no scopes": func(k *storepb.AccessKeyRecord) { k.Scopes = nil },
		"long text": func(k *storepb.AccessKeyRecord) { k.Description = string(make([]byte, 257)) },
	} {
		k := good()
		mut(k)
		r := h.apply(&storepb.Command{Op: &storepb.Command_PutAccessKey{PutAccessKey: &storepb.PutAccessKey{Key: k}}})
		if !errors.Is(r.Err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, r.Err)
		}
	}
	r := h.apply(&storepb.Command{Op: &storepb.Command_PutAccessKey{PutAccessKey: &storepb.PutAccessKey{}}})
	if !errors.Is(r.Err, ErrInvalidArgument) {
		t.Errorf("no key: %v", r.Err)
	}
	if len(dumpState(t, h.db, 1)) != 1 { // only ShardMeta
		t.Fatalf("refused commands wrote state: %v", dumpState(t, h.db, 1))
	}
}

// Replicas applying the same key commands hold identical key bytes, whatever
// their clocks.
func TestAccessKeyDeterministic(t *testing.T) {
	var cmds []*storepb.Command
	for i := range 40 {
		tenant := fmt.Sprintf("t%d", i%3)
		id := fmt.Sprintf("K%02d", i%17)
		if i%4 == 3 {
			cmds = append(cmds, &storepb.Command{Op: &storepb.Command_RevokeAccessKey{RevokeAccessKey: &storepb.RevokeAccessKey{Tenant: tenant, AccessKeyId: id}}})
			continue
		}
		cmds = append(cmds, &storepb.Command{Op: &storepb.Command_PutAccessKey{PutAccessKey: &storepb.PutAccessKey{Key: &storepb.AccessKeyRecord{
			AccessKeyId: id, Tenant: tenant, SecretAccessKey: "s" + id, Scopes: []string{"queues:admin", "messages:send"}, CreatedAtMs: int64(i)}}}})
	}
	var dumps [2][]string
	var outcomes [2][]string
	for r := range 2 {
		h := newHarness(t)
		for _, c := range cmds {
			h.now += int64(r + 1)
			res := h.apply(c)
			outcomes[r] = append(outcomes[r], fmt.Sprint(res.Err))
		}
		dumps[r] = dumpState(t, h.db, 1)
	}
	if !slices.Equal(outcomes[0], outcomes[1]) {
		t.Fatalf("outcomes differ:\n%v\n%v", outcomes[0], outcomes[1])
	}
	// ShardMeta (applied time) differs with the clocks; the keys must not.
	prefix := string(append(keys.StatePrefix(1), 0x09))
	strip := func(d []string) []string {
		return slices.DeleteFunc(slices.Clone(d), func(s string) bool { return !strings.HasPrefix(s, prefix) })
	}
	if a, b := strip(dumps[0]), strip(dumps[1]); !slices.Equal(a, b) || len(a) == 0 {
		t.Fatalf("state differs or is empty:\n%v\n%v", a, b)
	}
}
