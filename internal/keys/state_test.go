package keys

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
)

// TestStateKeyOrder lists keys in the order they must sort in Pebble: every
// kind against its neighbours and, inside each kind, the orders the store's
// scans depend on (visible_at before seq, negative times first, names with a
// common prefix, tenants kept apart).
func TestStateKeyOrder(t *testing.T) {
	const s = 7
	ordered := []struct {
		name string
		key  []byte
	}{
		{"raft hardstate", HardState(s)},
		{"state prefix", StatePrefix(s)},
		{"applied", AppliedIndex(s)},
		{"catalog a/x", Catalog(s, "a", "x")},
		{"catalog a/x.fifo", Catalog(s, "a", "x.fifo")},
		{"catalog a/xy", Catalog(s, "a", "xy")},
		{"catalog ab/a", Catalog(s, "ab", "a")},
		{"confstate", ConfState(s)},
		{"shard meta", ShardMeta(s)},
		{"dlqref a/d/x", DeadLetterRef(s, "a", "d", "x")},
		{"dlqref a/d/y", DeadLetterRef(s, "a", "d", "y")},
		{"dlqref a/dd/a", DeadLetterRef(s, "a", "dd", "a")},
		{"tenant a", Tenant(s, "a")},
		{"tenant ab", Tenant(s, "ab")},
		{"due min", Due(s, math.MinInt64, 0)},
		{"due -1/9", Due(s, -1, 9)},
		{"due 5/1", Due(s, 5, 1)},
		{"due 5/2", Due(s, 5, 2)},
		{"due 6/0", Due(s, 6, 0)},
		{"due low", DueLow(s)},
		{"access key AK1", AccessKey(s, "AK1")},
		{"access key AK2", AccessKey(s, "AK2")},
		{"tenant access key a/AK2", TenantAccessKey(s, "a", "AK2")},
		{"tenant access key ab/AK1", TenantAccessKey(s, "ab", "AK1")},
		{"queue 1 meta", QueueMeta(s, 1)},
		{"queue 1 dedup k1", Dedup(s, 1, "k1")},
		{"queue 1 dedup k2", Dedup(s, 1, "k2")},
		{"queue 1 dedup order -1", DedupOrder(s, 1, -1, "z")},
		{"queue 1 dedup order 5 a", DedupOrder(s, 1, 5, "a")},
		{"queue 1 dedup order 5 b", DedupOrder(s, 1, 5, "b")},
		{"queue 1 dedup order 6", DedupOrder(s, 1, 6, "a")},
		{"queue 1 fair empty 9", AppendFair(nil, s, 1, "", 9, 0)},
		{"queue 1 fair a -1", AppendFair(nil, s, 1, "a", -1, 9)},
		{"queue 1 fair a 5/1", AppendFair(nil, s, 1, "a", 5, 1)},
		{"queue 1 fair a 5/2", AppendFair(nil, s, 1, "a", 5, 2)},
		{"queue 1 fair ab 0", AppendFair(nil, s, 1, "ab", 0, 0)},
		{"queue 1 group empty 9", Group(s, 1, "", 9)},
		{"queue 1 group a 1", Group(s, 1, "a", 1)},
		{"queue 1 group a 2", Group(s, 1, "a", 2)},
		{"queue 1 group a 256", Group(s, 1, "a", 256)},
		{"queue 1 group a\\x00 0", Group(s, 1, "a\x00", 0)},
		{"queue 1 group ab 0", Group(s, 1, "ab", 0)},
		{"queue 1 head -1", GroupHead(s, 1, -1, 9)},
		{"queue 1 head 5/1", GroupHead(s, 1, 5, 1)},
		{"queue 1 head 5/2", GroupHead(s, 1, 5, 2)},
		{"queue 1 head 6/0", GroupHead(s, 1, 6, 0)},
		{"queue 1 idem -60000 z", Idem(s, 1, -60000, "z")},
		{"queue 1 idem 0 a", Idem(s, 1, 0, "a")},
		{"queue 1 idem 60000 a", Idem(s, 1, 60000, "a")},
		{"queue 1 idem 60000 ab", Idem(s, 1, 60000, "ab")},
		{"queue 1 idem 120000 a", Idem(s, 1, 120000, "a")},
		{"queue 1 tag low a", TagLow(s, 1, "a")},
		{"queue 1 visible low", VisibleLow(s, 1)},
		{"queue 1 msg 1", Message(s, 1, 1)},
		{"queue 1 msg 2", Message(s, 1, 2)},
		{"queue 1 msg 256", Message(s, 1, 256)},
		{"queue 1 priority rank 0 -1", AppendPriority(nil, s, 1, 0, -1, 9)},
		{"queue 1 priority rank 0 5/1", AppendPriority(nil, s, 1, 0, 5, 1)},
		{"queue 1 priority rank 0 6/0", AppendPriority(nil, s, 1, 0, 6, 0)},
		{"queue 1 priority rank 9 min", AppendPriority(nil, s, 1, 9, math.MinInt64, 0)},
		{"queue 1 lease 1", Lease(s, 1, 1)},
		{"queue 1 lease 256", Lease(s, 1, 256)},
		{"queue 1 tag blue 9", Tag(s, 1, "blue", 9, 1)},
		{"queue 1 tag red -5", Tag(s, 1, "red", -5, 9)},
		{"queue 1 tag red 5/1", Tag(s, 1, "red", 5, 1)},
		{"queue 1 tag red 5/2", Tag(s, 1, "red", 5, 2)},
		{"queue 1 tag red 6/0", Tag(s, 1, "red", 6, 0)},
		{"queue 1 tag redd 0", Tag(s, 1, "redd", 0, 0)},
		{"queue 1 vis min", Visible(s, 1, math.MinInt64, 0)},
		{"queue 1 vis -1", Visible(s, 1, -1, 5)},
		{"queue 1 vis 0", Visible(s, 1, 0, 5)},
		{"queue 1 vis 5/1", Visible(s, 1, 5, 1)},
		{"queue 1 vis 5/2", Visible(s, 1, 5, 2)},
		{"queue 1 vis 6/0", Visible(s, 1, 6, 0)},
		{"queue 1 order", QueueOrder(s, 1)},
		{"queue 1 priority low rank 0", LowMarkOf(PriorityPrefix(s, 1, 0))},
		{"queue 1 priority low rank 9", LowMarkOf(PriorityPrefix(s, 1, 9))},
		{"queue 1 fair low a", LowMarkOf(FairPrefix(s, 1, "a"))},
		{"queue 1 group state a", GroupState(s, 1, "a")},
		{"queue 1 group state b", GroupState(s, 1, "b")},
		{"queue 1 ring 0/5/a", GroupRing(s, 1, 0, 5, "a")},
		{"queue 1 ring 0/5/b", GroupRing(s, 1, 0, 5, "b")},
		{"queue 1 ring 0/6/a", GroupRing(s, 1, 0, 6, "a")},
		{"queue 1 ring 1/0/a", GroupRing(s, 1, 1, 0, "a")},
		{"queue 1 expiry -1", Expiry(s, 1, -1, 9)},
		{"queue 1 expiry 5/1", Expiry(s, 1, 5, 1)},
		{"queue 1 expiry 5/2", Expiry(s, 1, 5, 2)},
		{"queue 1 expiry 6/0", Expiry(s, 1, 6, 0)},
		{"queue 2 meta", QueueMeta(s, 2)},
		{"queue 256 meta", QueueMeta(s, 256)},
		{"outbox 1", Outbox(s, 1)},
		{"outbox 2", Outbox(s, 2)},
		{"delivered 1/9", Delivered(s, 1, 9)},
		{"delivered 2/1", Delivered(s, 2, 1)},
		{"delivered order 1", DeliveredOrder(s, 1, 9, 9)},
		{"delivered order 2", DeliveredOrder(s, 2, 0, 0)},
		{"state end", StateEnd(s)},
		{"next shard applied", AppliedIndex(s + 1)},
	}
	for i := 1; i < len(ordered); i++ {
		a, b := ordered[i-1], ordered[i]
		if bytes.Compare(a.key, b.key) >= 0 {
			t.Errorf("%s (%s) must sort before %s (%s)", a.name, Pretty(a.key), b.name, Pretty(b.key))
		}
	}
	// Range helpers bound exactly their kind.
	within := func(name string, k, lo, hi []byte) {
		t.Helper()
		if bytes.Compare(k, lo) < 0 || bytes.Compare(k, hi) >= 0 {
			t.Errorf("%s: %s not in [%s, %s)", name, Pretty(k), Pretty(lo), Pretty(hi))
		}
	}
	outside := func(name string, k, lo, hi []byte) {
		t.Helper()
		if bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0 {
			t.Errorf("%s: %s unexpectedly in [%s, %s)", name, Pretty(k), Pretty(lo), Pretty(hi))
		}
	}
	within("visible until", Visible(s, 1, 5, math.MaxUint64), VisiblePrefix(s, 1), VisibleUntil(s, 1, 5))
	outside("visible until", Visible(s, 1, 6, 0), VisiblePrefix(s, 1), VisibleUntil(s, 1, 5))
	within("tag until", Tag(s, 1, "red", 5, math.MaxUint64), TagPrefix(s, 1, "red"), TagUntil(s, 1, "red", 5))
	outside("tag until", Tag(s, 1, "red", 6, 0), TagPrefix(s, 1, "red"), TagUntil(s, 1, "red", 5))
	outside("tag prefix", Tag(s, 1, "redd", 0, 0), TagPrefix(s, 1, "red"), PrefixEnd(TagPrefix(s, 1, "red")))
	within("head until", GroupHead(s, 1, 5, math.MaxUint64), GroupHeadPrefix(s, 1), GroupHeadUntil(s, 1, 5))
	outside("head until", GroupHead(s, 1, 6, 0), GroupHeadPrefix(s, 1), GroupHeadUntil(s, 1, 5))
	outside("group prefix", Group(s, 1, "ab", 0), GroupPrefix(s, 1, "a"), PrefixEnd(GroupPrefix(s, 1, "a")))
	within("groups", Group(s, 1, "zz", math.MaxUint64), GroupsPrefix(s, 1), PrefixEnd(GroupsPrefix(s, 1)))
	within("dedup until", DedupOrder(s, 1, 5, "zzz"), DedupOrderPrefix(s, 1), DedupOrderUntil(s, 1, 5))
	within("idem buckets before", Idem(s, 1, 60000, "zzz"), IdemPrefix(s, 1), IdemBucketStart(s, 1, 60001))
	outside("idem buckets before", Idem(s, 1, 60000, ""), IdemPrefix(s, 1), IdemBucketStart(s, 1, 60000))
	within("delivered until", DeliveredOrder(s, 5, math.MaxUint64, 1), DeliveredOrderPrefix(s), DeliveredOrderUntil(s, 5))
	within("queue", Message(s, 1, math.MaxUint64), QueuePrefix(s, 1), QueueEnd(s, 1))
	within("queue", GroupRing(s, 1, math.MaxUint64, 0, "z"), QueuePrefix(s, 1), QueueEnd(s, 1))
	within("priorities", AppendPriority(nil, s, 1, 9, math.MaxInt64, 0), PrioritiesPrefix(s, 1), PrefixEnd(PrioritiesPrefix(s, 1)))
	outside("priority rank", AppendPriority(nil, s, 1, 1, 0, 0), PriorityPrefix(s, 1, 0), PrefixEnd(PriorityPrefix(s, 1, 0)))
	outside("fair prefix", AppendFair(nil, s, 1, "ab", 0, 0), FairPrefix(s, 1, "a"), PrefixEnd(FairPrefix(s, 1, "a")))
	within("fairs", AppendFair(nil, s, 1, "zz", 0, 0), FairsPrefix(s, 1), PrefixEnd(FairsPrefix(s, 1)))
	within("ring", GroupRing(s, 1, 3, 4, "z"), GroupRingPrefix(s, 1), PrefixEnd(GroupRingPrefix(s, 1)))
	within("order", GroupState(s, 1, "z"), OrderPrefix(s, 1), PrefixEnd(OrderPrefix(s, 1)))
	outside("queue", QueueMeta(s, 2), QueuePrefix(s, 1), QueueEnd(s, 1))
	outside("tenant", Catalog(s, "ab", "a"), CatalogTenantPrefix(s, "a"), PrefixEnd(CatalogTenantPrefix(s, "a")))
	for _, k := range ordered[2 : len(ordered)-2] {
		within("state", k.key, StatePrefix(s), StateEnd(s))
	}
}

// TestStateKeyRoundTrip decodes every kind and rejects truncated keys,
// trailing bytes and keys of another kind.
func TestStateKeyRoundTrip(t *testing.T) {
	const s = 3
	type check struct {
		key    []byte
		decode func([]byte) (string, error)
		want   string
	}
	str := func(parts ...any) string {
		var b strings.Builder
		for _, p := range parts {
			b.WriteString(stringify(p))
			b.WriteByte('|')
		}
		return b.String()
	}
	checks := []check{
		{Catalog(s, "t\x00x", "q"), func(k []byte) (string, error) {
			a, b, c, err := DecodeCatalog(k)
			return str(a, b, c), err
		}, str(uint64(s), "t\x00x", "q")},
		{DeadLetterRef(s, "t", "d", "src"), func(k []byte) (string, error) {
			a, b, c, d, err := DecodeDeadLetterRef(k)
			return str(a, b, c, d), err
		}, str(uint64(s), "t", "d", "src")},
		{Message(s, 4, 99), func(k []byte) (string, error) {
			a, b, c, err := DecodeMessage(k)
			return str(a, b, c), err
		}, str(uint64(s), uint64(4), uint64(99))},
		{Lease(s, 4, 99), func(k []byte) (string, error) {
			a, b, c, err := DecodeLease(k)
			return str(a, b, c), err
		}, str(uint64(s), uint64(4), uint64(99))},
		{Visible(s, 4, -7, 99), func(k []byte) (string, error) {
			a, b, c, d, err := DecodeVisible(k)
			return str(a, b, c, d), err
		}, str(uint64(s), uint64(4), int64(-7), uint64(99))},
		{Expiry(s, 4, -7, 99), func(k []byte) (string, error) {
			a, b, c, d, err := DecodeExpiry(k)
			return str(a, b, c, d), err
		}, str(uint64(s), uint64(4), int64(-7), uint64(99))},
		{Tag(s, 4, "red", 8, 99), func(k []byte) (string, error) {
			a, b, c, d, e, err := DecodeTag(k)
			return str(a, b, c, d, e), err
		}, str(uint64(s), uint64(4), "red", int64(8), uint64(99))},
		{Dedup(s, 4, "i:k"), func(k []byte) (string, error) {
			a, b, c, err := DecodeDedup(k)
			return str(a, b, c), err
		}, str(uint64(s), uint64(4), "i:k")},
		{DedupOrder(s, 4, 12, "i:k"), func(k []byte) (string, error) {
			a, b, c, d, err := DecodeDedupOrder(k)
			return str(a, b, c, d), err
		}, str(uint64(s), uint64(4), int64(12), "i:k")},
		{Idem(s, 4, 120000, "k\x00"), func(k []byte) (string, error) {
			a, b, c, d, err := DecodeIdem(k)
			return str(a, b, c, d), err
		}, str(uint64(s), uint64(4), int64(120000), "k\x00")},
		{Group(s, 4, "g\x00", 99), func(k []byte) (string, error) {
			a, b, c, d, err := DecodeGroup(k)
			return str(a, b, c, d), err
		}, str(uint64(s), uint64(4), "g\x00", uint64(99))},
		{GroupHead(s, 4, -3, 99), func(k []byte) (string, error) {
			a, b, c, d, err := DecodeGroupHead(k)
			return str(a, b, c, d), err
		}, str(uint64(s), uint64(4), int64(-3), uint64(99))},
		{AppendPriority(nil, s, 4, 2, -8, 99), func(k []byte) (string, error) {
			a, b, c, d, e, err := DecodePriority(k)
			return str(a, b, uint64(c), d, e), err
		}, str(uint64(s), uint64(4), uint64(2), int64(-8), uint64(99))},
		{AppendFair(nil, s, 4, "g\x00", 8, 99), func(k []byte) (string, error) {
			a, b, c, d, e, err := DecodeFair(k)
			return str(a, b, c, d, e), err
		}, str(uint64(s), uint64(4), "g\x00", int64(8), uint64(99))},
		{GroupRing(s, 4, 3, 7, "g"), func(k []byte) (string, error) {
			a, b, c, d, e, err := DecodeGroupRing(k)
			return str(a, b, c, d, e), err
		}, str(uint64(s), uint64(4), uint64(3), uint64(7), "g")},
		{Due(s, -12, 4), func(k []byte) (string, error) {
			a, b, c, err := DecodeDue(k)
			return str(a, b, c), err
		}, str(uint64(s), int64(-12), uint64(4))},
		{Outbox(s, 5), func(k []byte) (string, error) {
			a, b, err := DecodeOutbox(k)
			return str(a, b), err
		}, str(uint64(s), uint64(5))},
		{Delivered(s, 1, 5), func(k []byte) (string, error) {
			a, b, c, err := DecodeDelivered(k)
			return str(a, b, c), err
		}, str(uint64(s), uint64(1), uint64(5))},
		{DeliveredOrder(s, 77, 1, 5), func(k []byte) (string, error) {
			a, b, c, d, err := DecodeDeliveredOrder(k)
			return str(a, b, c, d), err
		}, str(uint64(s), int64(77), uint64(1), uint64(5))},
	}
	for i, c := range checks {
		got, err := c.decode(c.key)
		if err != nil || got != c.want {
			t.Errorf("%d %s: got %q, %v; want %q", i, Pretty(c.key), got, err, c.want)
		}
		if _, err := c.decode(append(bytes.Clone(c.key), 0)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d %s: trailing byte accepted", i, Pretty(c.key))
		}
		for n := 0; n < len(c.key); n++ {
			if _, err := c.decode(c.key[:n]); !errors.Is(err, ErrMalformed) {
				t.Errorf("%d %s: truncated to %d accepted", i, Pretty(c.key), n)
			}
		}
		// Every other kind's decoder rejects this key.
		for j, o := range checks {
			if j == i {
				continue
			}
			if _, err := o.decode(c.key); err == nil {
				t.Errorf("decoder %d accepted key %d (%s)", j, i, Pretty(c.key))
			}
		}
		if p := Pretty(c.key); strings.Contains(p, "/state/3/") == false || strings.HasSuffix(p, "/") {
			t.Errorf("pretty %q", p)
		}
	}
}

func TestPrettyState(t *testing.T) {
	for k, want := range map[string]string{
		string(ShardMeta(1)):                        "/state/1/shardmeta",
		string(QueueMeta(1, 2)):                     "/state/1/q/2/meta",
		string(Visible(1, 2, 30, 4)):                "/state/1/q/2/v/30/4",
		string(Tag(1, 2, "red", 30, 4)):             `/state/1/q/2/t/"red"/30/4`,
		string(Catalog(1, "t", "a")):                `/state/1/catalog/"t"/"a"`,
		string(AppliedIndex(1)):                     "/state/1/applied",
		string(Group(1, 2, "g", 4)):                 `/state/1/q/2/g/"g"/4`,
		string(GroupHead(1, 2, 30, 4)):              "/state/1/q/2/h/30/4",
		string(Tenant(1, "acme")):                   `/state/1/tenant/"acme"`,
		string(AccessKey(1, "AK1")):                 `/state/1/accesskey/"AK1"`,
		string(TenantAccessKey(1, "acme", "AK1")):   `/state/1/accesskey-of/"acme"/"AK1"`,
		string(VisibleLow(1, 2)):                    "/state/1/q/2/vlow",
		string(TagLow(1, 2, "red")):                 `/state/1/q/2/tlow/"red"`,
		string(AppendPriority(nil, 1, 2, 0, 30, 4)): "/state/1/q/2/p/0/30/4",
		string(AppendFair(nil, 1, 2, "g", 30, 4)):   `/state/1/q/2/f/"g"/30/4`,
		string(GroupRing(1, 2, 3, 5, "g")):          `/state/1/q/2/ring/3/5/"g"`,
		string(QueueOrder(1, 2)):                    "/state/1/q/2/w/00",
		string(Idem(1, 2, 60000, "k")):              `/state/1/q/2/i/60000/"k"`,
	} {
		if got := Pretty([]byte(k)); got != want {
			t.Errorf("Pretty = %q, want %q", got, want)
		}
	}
}

func stringify(v any) string {
	switch v := v.(type) {
	case string:
		return "s:" + v
	case uint64:
		return "u:" + string(AppendUint64(nil, v))
	case int64:
		return "i:" + string(AppendInt64(nil, v))
	}
	panic("unknown type")
}

func TestLowMarkOf(t *testing.T) {
	if got := LowMarkOf(VisiblePrefix(3, 4)); string(got) != string(VisibleLow(3, 4)) {
		t.Errorf("visible: %s", Pretty(got))
	}
	if got := LowMarkOf(TagPrefix(3, 4, "red")); string(got) != string(TagLow(3, 4, "red")) {
		t.Errorf("tag: %s", Pretty(got))
	}
	if got := LowMarkOf(PriorityPrefix(3, 4, 2)); !bytes.Equal(got, PriorityLow(3, 4, 2)) {
		t.Errorf("priority: %s, want %s", Pretty(got), Pretty(PriorityLow(3, 4, 2)))
	}
	if got := LowMarkOf(PriorityPrefix(3, 4, 2)); len(got) == 0 || bytes.HasPrefix(got, PrioritiesPrefix(3, 4)) || !bytes.HasPrefix(got, OrderPrefix(3, 4)) {
		t.Errorf("priority: %s", Pretty(got))
	}
	if a, b := LowMarkOf(FairPrefix(3, 4, "a")), LowMarkOf(FairPrefix(3, 4, "b")); len(a) == 0 || bytes.Equal(a, b) || !bytes.HasPrefix(a, OrderPrefix(3, 4)) {
		t.Errorf("fair: %s %s", Pretty(a), Pretty(b))
	}
	for _, p := range [][]byte{GroupHeadPrefix(3, 4), MessagePrefix(3, 4), Visible(3, 4, 1, 2), StatePrefix(3), PrioritiesPrefix(3, 4), nil} {
		if got := LowMarkOf(p); got != nil {
			t.Errorf("LowMarkOf(%s) = %s, want nil", Pretty(p), Pretty(got))
		}
	}
}

// TestAppendKeys: the Append forms build the same keys as the plain ones,
// after whatever dst holds.
func TestAppendKeys(t *testing.T) {
	dst := []byte("junk")
	for _, c := range []struct{ got, want []byte }{
		{AppendMessage(dst, 3, 4, 5), Message(3, 4, 5)},
		{AppendLease(dst, 3, 4, 5), Lease(3, 4, 5)},
		{AppendVisible(dst, 3, 4, -6, 5), Visible(3, 4, -6, 5)},
		{AppendTag(dst, 3, 4, "r\x00d", 6, 5), Tag(3, 4, "r\x00d", 6, 5)},
	} {
		if string(c.got[:4]) != "junk" || string(c.got[4:]) != string(c.want) {
			t.Errorf("%x, want junk + %x", c.got, c.want)
		}
	}
}
