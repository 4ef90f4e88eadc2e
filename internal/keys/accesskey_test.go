package keys

import (
	"bytes"
	"testing"
)

func TestAccessKeyRoundTrip(t *testing.T) {
	s, id, err := DecodeAccessKey(AccessKey(3, "AKQQ\x00X"))
	if err != nil || s != 3 || id != "AKQQ\x00X" {
		t.Fatalf("DecodeAccessKey = %d %q %v", s, id, err)
	}
	s, tenant, id, err := DecodeTenantAccessKey(TenantAccessKey(3, "acme", "AK1"))
	if err != nil || s != 3 || tenant != "acme" || id != "AK1" {
		t.Fatalf("DecodeTenantAccessKey = %d %q %q %v", s, tenant, id, err)
	}
	for _, bad := range [][]byte{
		append(AccessKey(3, "AK1"), 0),
		TenantAccessKey(3, "a", "AK1"),
		Tenant(3, "a"),
		stateKey(3, stateAccessKey),
	} {
		if _, _, err := DecodeAccessKey(bad); err == nil {
			t.Errorf("DecodeAccessKey(%x) accepted", bad)
		}
	}
	if _, _, _, err := DecodeTenantAccessKey(AccessKey(3, "AK1")); err == nil {
		t.Error("DecodeTenantAccessKey accepted a record key")
	}
}

// A tenant's index range holds its keys only, never those of a tenant whose
// name extends it.
func TestTenantAccessKeyPrefixIsolated(t *testing.T) {
	p := TenantAccessKeyPrefix(3, "a")
	end := PrefixEnd(p)
	in := TenantAccessKey(3, "a", "Z")
	out := TenantAccessKey(3, "ab", "A")
	if bytes.Compare(in, p) < 0 || bytes.Compare(in, end) >= 0 {
		t.Error("own key outside the prefix")
	}
	if bytes.Compare(out, p) >= 0 && bytes.Compare(out, end) < 0 {
		t.Error("tenant ab's key inside tenant a's range")
	}
}
