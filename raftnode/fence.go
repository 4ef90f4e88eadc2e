package raftnode

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// Incarnations fence a member that lost its disk (see DESIGN.md, "Wiped
// members"). Every data directory gets a random incarnation when the host
// first opens it; the transports send it with every batch and snapshot.
// A host pins the incarnation of each peer the first time it hears from
// that peer, durably, and from then on drops whatever another incarnation
// of that node id sends. A wiped node comes back with a new incarnation:
// its votes and acknowledgements reach no one, so it can never vote twice
// in a term with state it forgot. It has to join again under a new node id
// (a new replica, learner first).

// loadIncarnations reads (or creates, synced) this data directory's
// incarnation and the peer incarnations pinned so far.
func loadIncarnations(db *pebble.DB) (self uint64, pinned map[uint64]uint64, err error) {
	v, closer, err := db.Get(keys.NodeIncarnation())
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		for self == 0 {
			var b [8]byte
			_, _ = rand.Read(b[:])
			self = binary.BigEndian.Uint64(b[:])
		}
		if err := db.Set(keys.NodeIncarnation(), binary.BigEndian.AppendUint64(nil, self), pebble.Sync); err != nil {
			return 0, nil, fmt.Errorf("record incarnation: %w", err)
		}
	case err != nil:
		return 0, nil, fmt.Errorf("read incarnation: %w", err)
	default:
		if len(v) != 8 {
			closer.Close()
			return 0, nil, fmt.Errorf("incarnation record is %d bytes, want 8", len(v))
		}
		self = binary.BigEndian.Uint64(v)
		closer.Close()
	}
	pinned = map[uint64]uint64{}
	prefix := keys.PeerIncarnationPrefix()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: keys.PrefixEnd(prefix)})
	if err != nil {
		return 0, nil, fmt.Errorf("read peer incarnations: %w", err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		id, rest, err := keys.ReadUint64(it.Key()[len(prefix):])
		if err != nil || len(rest) != 0 || len(it.Value()) != 8 {
			return 0, nil, fmt.Errorf("peer incarnation record %x: malformed", it.Key())
		}
		pinned[id] = binary.BigEndian.Uint64(it.Value())
	}
	return self, pinned, it.Error()
}

// Incarnation is this data directory's incarnation, sent with every message.
func (h *Host) Incarnation() uint64 { return h.incarnation }

// AdmitPeer reports whether messages from node `from` of incarnation inc
// may be stepped: the first incarnation heard from a node is pinned
// (durably, before the first of its messages is stepped) and any other is
// refused with ErrFenced. The transports call it for every inbound batch
// and snapshot.
func (h *Host) AdmitPeer(from, inc uint64) error {
	if inc == 0 {
		h.fenced.Add(1)
		return fmt.Errorf("%w: node %d sent no incarnation", ErrFenced, from)
	}
	// A pin is written to the DB, which the owner closes after Stop:
	// Stop waits for bg.
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return ErrStopped
	}
	h.bg.Add(1)
	h.mu.Unlock()
	defer h.bg.Done()
	h.pinMu.Lock()
	defer h.pinMu.Unlock()
	switch was, ok := h.pinned[from]; {
	case ok && was == inc:
		return nil
	case ok:
		if h.fenced.Add(1) == 1 || h.fenced.Load()%1000 == 0 {
			h.log.Warn("fenced a node that came back with another incarnation (wiped disk?): it must join again under a new node id",
				"peer", from, "incarnation", inc, "pinned", was, "fenced_batches", h.fenced.Load())
		}
		return fmt.Errorf("%w: node %d is incarnation %x here, not %x: it must join again under a new node id", ErrFenced, from, was, inc)
	}
	if err := h.db.Set(keys.PeerIncarnation(from), binary.BigEndian.AppendUint64(nil, inc), pebble.Sync); err != nil {
		return fmt.Errorf("raftnode: pin incarnation of node %d: %w", from, err)
	}
	h.pinned[from] = inc
	return nil
}

// PinnedIncarnation returns the incarnation pinned for node id (0: none yet).
func (h *Host) PinnedIncarnation(id uint64) uint64 {
	h.pinMu.Lock()
	defer h.pinMu.Unlock()
	return h.pinned[id]
}

// Fenced counts inbound batches and snapshots refused by AdmitPeer.
func (h *Host) Fenced() uint64 { return h.fenced.Load() }

// PinPeer pins node id's incarnation as the cluster recorded it (the
// membership records), for peers this host has not heard from yet: a
// follower never talks to another follower, so first contact alone would
// leave such pairs unpinned. An id pinned to another incarnation keeps its
// pin (and ErrFenced is returned): first contact and the records agree
// unless the record came from a node that already lost its disk.
func (h *Host) PinPeer(id, inc uint64) error {
	if inc == 0 || id == h.cfg.NodeID {
		return nil
	}
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return ErrStopped
	}
	h.bg.Add(1)
	h.mu.Unlock()
	defer h.bg.Done()
	h.pinMu.Lock()
	defer h.pinMu.Unlock()
	if was, ok := h.pinned[id]; ok {
		if was != inc {
			return fmt.Errorf("%w: node %d is pinned to incarnation %x, the record says %x", ErrFenced, id, was, inc)
		}
		return nil
	}
	if err := h.db.Set(keys.PeerIncarnation(id), binary.BigEndian.AppendUint64(nil, inc), pebble.Sync); err != nil {
		return fmt.Errorf("raftnode: pin incarnation of node %d: %w", id, err)
	}
	h.pinned[id] = inc
	return nil
}

// LoadIncarnation returns the incarnation of the data directory db is in,
// creating it (synced) on first use; NewHost reads the same. A node that
// joins a cluster reports it before it has a node id (and a Host).
func LoadIncarnation(db *pebble.DB) (uint64, error) {
	inc, _, err := loadIncarnations(db)
	return inc, err
}

// RecordMembers tells the host which nodes the cluster's membership
// records (not this replica's configuration) name as group's members. The
// transport steps messages of a group only from its members, and a
// replica that was removed from a group and is now added back still has
// the configuration it had when it left (it may never have applied its
// own removal): without this, it would drop the current leader's appends
// and snapshot, the only messages that could bring it up to date.
func (h *Host) RecordMembers(group uint64, ids []uint64) {
	h.recorded.Store(group, slices.Clone(ids))
}

// recordedMember reports whether the cluster's records name id a member
// of group (RecordMembers).
func (h *Host) recordedMember(group, id uint64) bool {
	v, ok := h.recorded.Load(group)
	return ok && slices.Contains(v.([]uint64), id)
}
