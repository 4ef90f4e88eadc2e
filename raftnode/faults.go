package raftnode

import (
	"slices"
	"sync"
)

// FaultFilter cuts this node off from chosen peers: while a peer is
// blocked, the GRPCTransport drops every Raft message to it and from it
// and refuses snapshots both ways, as a network partition would. It exists
// for fault tests of real processes (`quorumq serve --fault-injection`, a
// binary built with -tags chaos); a transport without one (the production
// default) filters nothing. Safe for concurrent use; a nil *FaultFilter
// blocks nothing.
type FaultFilter struct {
	mu      sync.RWMutex
	blocked map[uint64]bool
	dropped uint64
}

// NewFaultFilter returns a filter that blocks nothing.
func NewFaultFilter() *FaultFilter { return &FaultFilter{blocked: map[uint64]bool{}} }

// Set replaces the set of blocked peers (empty: heal).
func (f *FaultFilter) Set(peers []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked = make(map[uint64]bool, len(peers))
	for _, p := range peers {
		f.blocked[p] = true
	}
}

// Blocked returns the blocked peers, sorted.
func (f *FaultFilter) Blocked() []uint64 {
	if f == nil {
		return nil
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]uint64, 0, len(f.blocked))
	for p := range f.blocked {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Dropped is the number of messages and snapshots dropped so far.
func (f *FaultFilter) Dropped() uint64 {
	if f == nil {
		return 0
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.dropped
}

// Drop reports whether traffic to or from peer is cut, and counts it if so.
func (f *FaultFilter) Drop(peer uint64) bool {
	if f == nil {
		return false
	}
	f.mu.RLock()
	cut := f.blocked[peer]
	f.mu.RUnlock()
	if cut {
		f.mu.Lock()
		f.dropped++
		f.mu.Unlock()
	}
	return cut
}
