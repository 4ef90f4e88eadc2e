package server

import (
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quorumq/quorumq/raftnode"
)

// An overloaded shard (raftnode.ErrOverloaded, which also matches
// ErrProposalDropped) answers RESOURCE_EXHAUSTED / OVERLOADED with a
// RetryInfo delay, not UNAVAILABLE / NOT_LEADER (which the router retries
// on another node at once); a plain dropped proposal stays NOT_LEADER.
func TestOverloadedMapsToResourceExhaustedWithRetry(t *testing.T) {
	overloaded := fmt.Errorf("propose: %w", fmt.Errorf("%w: %w: group 3: full", raftnode.ErrOverloaded, raftnode.ErrProposalDropped))
	st, _ := status.FromError(ToStatus(overloaded))
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("code %v, want RESOURCE_EXHAUSTED", st.Code())
	}
	var info *errdetails.ErrorInfo
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	if info.GetReason() != ReasonOverloaded || info.GetDomain() != ErrorDomain {
		t.Fatalf("error info %v, want reason %s", info, ReasonOverloaded)
	}
	if d := retry.GetRetryDelay().AsDuration(); d <= 0 {
		t.Fatalf("retry info %v, want a positive delay", retry)
	}
	if code, reason, _ := BatchError(overloaded); code != "RESOURCE_EXHAUSTED" || reason != ReasonOverloaded {
		t.Fatalf("batch entry error %s/%s, want RESOURCE_EXHAUSTED/%s", code, reason, ReasonOverloaded)
	}

	dropped := fmt.Errorf("propose: %w", raftnode.ErrProposalDropped)
	if code, reason, _ := BatchError(dropped); code != "UNAVAILABLE" || reason != ReasonNotLeader {
		t.Fatalf("dropped proposal: %s/%s, want UNAVAILABLE/%s", code, reason, ReasonNotLeader)
	}
}
