package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quorumq/quorumq/raftnode"
)

// Fault injection for the process tier of the fault suite (tests/chaos):
// with Config.FaultInjection (`quorumq serve --fault-injection`, only in a
// binary built with -tags chaos) the node serves FaultsPath on its HTTP
// listener, which must be on loopback. POST {"blocked":[2,3]} cuts this node
// off from nodes 2 and 3: Raft messages and snapshots to and from them are
// dropped (raftnode.FaultFilter) and calls to their peer listeners
// (forwarding, outbox deliveries) fail with UNAVAILABLE. POST
// {"blocked":[]} heals; GET shows the state. A partition between two sides
// is made by posting to every node on each side.

// FaultsPath is the fault-injection control endpoint.
const FaultsPath = "/debug/faults"

// FaultsSyncPath: POST makes everything this node has written durable (a
// synced write of Pebble's WAL). Applied state is written without sync and
// made durable by the next synced Raft write, so a node idle after its last
// apply would lose that apply to kill -9 (and replay it at restart); the
// fault tests sync before killing every node to read their states offline
// at one applied index.
const FaultsSyncPath = FaultsPath + "/sync"

// ErrFaultInjectionUnavailable: Config.FaultInjection in a production build.
var ErrFaultInjectionUnavailable = errors.New("--fault-injection is for fault tests only: this binary was built without -tags chaos and refuses it")

// FaultState is the body of FaultsPath: POST sets Blocked; GET answers the
// blocked peers and how many messages and calls were dropped.
type FaultState struct {
	Blocked []uint64 `json:"blocked"`
	Dropped uint64   `json:"dropped,omitempty"`
}

// newFaultFilter returns the node's filter: nil unless cfg.FaultInjection,
// and an error if this build or the HTTP address does not allow it.
func newFaultFilter(cfg Config) (*raftnode.FaultFilter, error) {
	if !cfg.FaultInjection {
		return nil, nil
	}
	if !faultInjectionBuilt {
		return nil, ErrFaultInjectionUnavailable
	}
	host, _, err := net.SplitHostPort(cfg.HTTPAddr)
	if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return nil, fmt.Errorf("--fault-injection: --http-addr %q must be a loopback address", cfg.HTTPAddr)
	}
	return raftnode.NewFaultFilter(), nil
}

// faultDialOptions makes calls to a blocked peer's listener fail, as a
// partition would (the Raft stream is filtered by the transport itself;
// this covers forwarded calls and outbox deliveries, which are unary).
func faultDialOptions(f *raftnode.FaultFilter, peers map[uint64]string) []grpc.DialOption {
	if f == nil {
		return nil
	}
	byAddr := make(map[string]uint64, len(peers))
	for id, addr := range peers {
		byAddr[addr] = id
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
		cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if id, ok := byAddr[cc.Target()]; ok && f.Drop(id) {
			return status.Errorf(codes.Unavailable, "node %d cut off by fault injection", id)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})}
}

// faultHandler serves FaultsPath and FaultsSyncPath (sync does the work)
// in front of next, to loopback callers only; with no filter it is next.
func faultHandler(f *raftnode.FaultFilter, sync func() error, next http.Handler) http.Handler {
	if f == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != FaultsPath && r.URL.Path != FaultsSyncPath {
			next.ServeHTTP(w, r)
			return
		}
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			http.Error(w, "fault injection answers loopback callers only", http.StatusForbidden)
			return
		}
		if r.URL.Path == FaultsSyncPath {
			if r.Method != http.MethodPost {
				http.Error(w, "POST", http.StatusMethodNotAllowed)
				return
			}
			if err := sync(); err != nil {
				http.Error(w, "sync: "+err.Error(), http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		switch r.Method {
		case http.MethodGet:
		case http.MethodPost:
			var s FaultState
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&s); err != nil {
				http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
				return
			}
			f.Set(s.Blocked)
		default:
			http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(FaultState{Blocked: f.Blocked(), Dropped: f.Dropped()})
	})
}
