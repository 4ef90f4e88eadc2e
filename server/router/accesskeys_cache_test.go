package router

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/quorumq/quorumq/server/shardserver"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// fakeKeys is a metadata shard for the cache: keys by id, and a count of
// lookups that reached it.
type fakeKeys struct {
	mu      sync.Mutex
	keys    map[string]string // id -> tenant
	fail    error
	fetches int
	gate    chan struct{} // if set, a lookup's answer waits for it to close
}

func (f *fakeKeys) fetch(_ context.Context, req *storepb.AccessKeyLookup) (*storepb.AccessKeyGrant, error) {
	f.mu.Lock()
	f.fetches++
	fail := f.fail
	tenant, ok := f.keys[req.GetAccessKeyId()]
	gate := f.gate
	f.mu.Unlock()
	if gate != nil { // the answer is on its way back
		<-gate
	}
	if fail != nil {
		return nil, fail
	}
	if !ok {
		return nil, shardserver.ErrUnknownAccessKey
	}
	return &storepb.AccessKeyGrant{Tenant: tenant, SigningKey: shardserver.SigningKey("s", req.GetDate(), req.GetRegion(), req.GetService())}, nil
}

func (f *fakeKeys) set(id, tenant string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if tenant == "" {
		delete(f.keys, id)
	} else {
		f.keys[id] = tenant
	}
}

type manualClock struct{ t time.Time }

func (c *manualClock) now() time.Time { return c.t }

func newTestCache(f *fakeKeys, c *manualClock) *AccessKeys {
	return &AccessKeys{fetch: f.fetch, ttl: DefaultAccessKeyTTL, missTTL: accessKeyMissTTL, now: c.now,
		entries: map[grantKey]grantEntry{}, inflight: map[grantKey]*flight{}}
}

// A revoked key keeps working on a node that cached it for less than the
// TTL after the lookup, and never longer: the bound DESIGN states.
func TestAccessKeyCacheRevocationBound(t *testing.T) {
	f := &fakeKeys{keys: map[string]string{"K": "acme"}}
	clk := &manualClock{t: time.Unix(1_800_000_000, 0)}
	a := newTestCache(f, clk)
	ctx := context.Background()
	g, err := a.AccessKeyGrant(ctx, "K", "20270115", "us-east-1", "sqs")
	if err != nil || g.Tenant != "acme" {
		t.Fatalf("first lookup: %v %v", g, err)
	}
	f.set("K", "") // revoked on the metadata shard
	clk.t = clk.t.Add(DefaultAccessKeyTTL - time.Millisecond)
	if _, err := a.AccessKeyGrant(ctx, "K", "20270115", "us-east-1", "sqs"); err != nil {
		t.Fatalf("within the TTL the cached grant answers: %v", err)
	}
	clk.t = clk.t.Add(time.Millisecond)
	if _, err := a.AccessKeyGrant(ctx, "K", "20270115", "us-east-1", "sqs"); !errors.Is(err, shardserver.ErrUnknownAccessKey) {
		t.Fatalf("at the TTL: %v, want unknown", err)
	}
	if f.fetches != 2 {
		t.Fatalf("%d lookups reached the shard, want 2", f.fetches)
	}
}

// Unknown ids are remembered for a second (a sprayer costs one lookup per
// id per second); a key created meanwhile works after that second.
func TestAccessKeyCacheMisses(t *testing.T) {
	f := &fakeKeys{keys: map[string]string{}}
	clk := &manualClock{t: time.Unix(1_800_000_000, 0)}
	a := newTestCache(f, clk)
	ctx := context.Background()
	for range 3 {
		if _, err := a.AccessKeyGrant(ctx, "NEW", "20270115", "r", "sqs"); !errors.Is(err, shardserver.ErrUnknownAccessKey) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if f.fetches != 1 {
		t.Fatalf("%d lookups for one unknown id, want 1", f.fetches)
	}
	f.set("NEW", "acme")
	clk.t = clk.t.Add(accessKeyMissTTL)
	if g, err := a.AccessKeyGrant(ctx, "NEW", "20270115", "r", "sqs"); err != nil || g.Tenant != "acme" {
		t.Fatalf("after the miss TTL: %v %v", g, err)
	}
}

// A failed lookup is not cached, and Forget drops every scope of a key.
func TestAccessKeyCacheFailuresAndForget(t *testing.T) {
	f := &fakeKeys{keys: map[string]string{"K": "acme"}, fail: errors.New("no quorum")}
	clk := &manualClock{t: time.Unix(1_800_000_000, 0)}
	a := newTestCache(f, clk)
	ctx := context.Background()
	if _, err := a.AccessKeyGrant(ctx, "K", "20270115", "r", "sqs"); err == nil || errors.Is(err, shardserver.ErrUnknownAccessKey) {
		t.Fatalf("failed lookup: %v", err)
	}
	f.fail = nil
	for _, region := range []string{"r1", "r2"} {
		if _, err := a.AccessKeyGrant(ctx, "K", "20270115", region, "sqs"); err != nil {
			t.Fatalf("after the failure: %v", err)
		}
	}
	f.set("K", "")
	a.Forget("K")
	for _, region := range []string{"r1", "r2"} {
		if _, err := a.AccessKeyGrant(ctx, "K", "20270115", region, "sqs"); !errors.Is(err, shardserver.ErrUnknownAccessKey) {
			t.Fatalf("after Forget (%s): %v", region, err)
		}
	}
}

// The cache never holds more than maxAccessKeyEntries.
func TestAccessKeyCacheBounded(t *testing.T) {
	f := &fakeKeys{keys: map[string]string{}}
	clk := &manualClock{t: time.Unix(1_800_000_000, 0)}
	a := newTestCache(f, clk)
	for i := range maxAccessKeyEntries + 10 {
		_, _ = a.AccessKeyGrant(context.Background(), "K", "20270115", fmt.Sprint("r", i), "sqs")
	}
	if n := len(a.entries); n > maxAccessKeyEntries {
		t.Fatalf("%d entries", n)
	}
}

// The signing key is AWS's derivation: the example of the SigV4 docs
// (secret wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215, us-east-1, iam).
func TestSigningKeyAWSExample(t *testing.T) {
	got := shardserver.SigningKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
	const want = "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
	if hexs := hex.EncodeToString(got); hexs != want {
		t.Fatalf("signing key %s, want %s", hexs, want)
	}
}

// Concurrent lookups of one key share one fetch: those that come while it
// runs wait for it, those after it find the cache.
func TestAccessKeyCacheOneLookupForConcurrentCallers(t *testing.T) {
	f := &fakeKeys{keys: map[string]string{"K": "acme"}, gate: make(chan struct{})}
	clk := &manualClock{t: time.Unix(1_800_000_000, 0)}
	a := newTestCache(f, clk)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := a.AccessKeyGrant(context.Background(), "K", "20270115", "r", "sqs")
			if err == nil && g.Tenant != "acme" {
				err = fmt.Errorf("grant %+v", g)
			}
			errs <- err
		}()
	}
	close(f.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if f.fetches != 1 {
		t.Fatalf("%d lookups reached the shard for 20 concurrent callers, want 1", f.fetches)
	}
}

// A lookup that was under way when the key was revoked through this node
// answers its callers but caches nothing: the next lookup asks again.
func TestAccessKeyCacheForgetDuringLookup(t *testing.T) {
	f := &fakeKeys{keys: map[string]string{"K": "acme"}, gate: make(chan struct{})}
	clk := &manualClock{t: time.Unix(1_800_000_000, 0)}
	a := newTestCache(f, clk)
	done := make(chan error, 1)
	go func() {
		_, err := a.AccessKeyGrant(context.Background(), "K", "20270115", "r", "sqs")
		done <- err
	}()
	// Wait until the lookup has read the key (before the revoke).
	for deadline := time.Now().Add(10 * time.Second); ; {
		f.mu.Lock()
		n := f.fetches
		f.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lookup did not start")
		}
		runtime.Gosched()
	}
	f.set("K", "")
	a.Forget("K")
	close(f.gate)
	if err := <-done; err != nil {
		t.Fatalf("the lookup under way: %v", err)
	}
	if _, err := a.AccessKeyGrant(context.Background(), "K", "20270115", "r", "sqs"); !errors.Is(err, shardserver.ErrUnknownAccessKey) {
		t.Fatalf("after Forget: %v (the stale lookup was cached)", err)
	}
}
