package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
)

// storage is one group's raft.Storage over the shared Pebble DBs: the
// log's (db) and the state's (sdb; db itself in one-DB mode).
//
// Layout (keys from internal/keys):
//
//	keys.HardState(g)     proto HardState                         unreplicated, db
//	keys.LogEntry(g, i)   proto Entry                             unreplicated, db
//	keys.Truncated(g)     index, term of the last removed entry    unreplicated (16 bytes BE), db
//	keys.AppliedIndex(g)  applied index                            replicated (8 bytes BE), sdb
//	keys.ConfState(g)     proto ConfState as of the applied index  replicated, sdb
//
// Reads (the raft.Storage methods) are served from memory where they can:
// the first and last index and term, and the most recently appended entries
// (up to cacheLimit bytes, see entry cache below); the rest goes to Pebble.
// Writes are staged into a batch by the host's loop and only become visible
// to the caches after the batch commits (commitAppend, commitApply): raft
// never sees an entry from Storage that is not durable, and raft's own
// unstable log covers the gap.
//
// The raft.Storage methods may be called from any goroutine (the host calls
// them from its loop; tests call them directly); mu guards the cache.
type storage struct {
	db    *pebble.DB // the log: HardState, entries, truncation point
	sdb   *pebble.DB // the replicated state (applied index, ConfState); db itself in one-DB mode
	group uint64

	mu         sync.Mutex
	hardState  *pb.HardState // last written; nil before the first write
	confState  *pb.ConfState // as of applied
	applied    uint64
	truncIndex uint64 // last removed entry; first index = truncIndex+1
	// durable is the highest applied index known to be on disk in sdb
	// (two-DB mode: as of its last flush; the log may be truncated up to
	// it, no further). Only grows.
	durable   uint64
	truncTerm uint64
	lastIndex uint64
	lastTerm  uint64

	// The entry cache: entries [cacheFirst, cacheFirst+len(cache)) of the
	// durable log, always inside [first, last]. Raft reads every entry
	// back from Storage at least once after its Ready (to apply it, once
	// committed), and a leader again for a follower whose append window was
	// full; without the cache each read is a Pebble iteration and a decode
	// of the whole entry. Appends extend it (a replaced tail is cut first),
	// truncation and snapshots trim it, and the oldest entries are evicted
	// beyond cacheLimit bytes (encoded size); 0 disables it.
	cache      []cachedEntry
	cacheFirst uint64
	cacheBytes uint64
	cacheLimit uint64

	// enc is stageAppend's encoding buffer (loop only), reused across
	// rounds: Batch.Set copies, so the encoded entries need not outlive
	// the call. Dropped after a round larger than maxEncBuf.
	enc []byte
}

// maxEncBuf bounds the encoding buffer a storage keeps between rounds.
const maxEncBuf = 4 << 20

// cachedEntry is a durable log entry and its encoded size. Cached entries
// are shared with raft and must never be modified.
type cachedEntry struct {
	e    *pb.Entry
	size uint64
}

var _ raft.Storage = (*storage)(nil)

// loadStorage reads a group's raft state from db (the log) and sdb (the
// applied index and ConfState; db itself in one-DB mode). fresh reports
// that nothing was ever written for the group (no HardState, no log).
func loadStorage(db, sdb *pebble.DB, group uint64) (s *storage, fresh bool, err error) {
	s = &storage{db: db, sdb: sdb, group: group, confState: &pb.ConfState{}}
	var hs pb.HardState
	found, err := getProto(db, keys.HardState(group), &hs)
	if err != nil {
		return nil, false, fmt.Errorf("load hard state: %w", err)
	}
	if found {
		s.hardState = &hs
	}
	if _, err := getProto(sdb, keys.ConfState(group), s.confState); err != nil {
		return nil, false, fmt.Errorf("load conf state: %w", err)
	}
	if v, ok, err := getValue(sdb, keys.AppliedIndex(group)); err != nil {
		return nil, false, fmt.Errorf("load applied index: %w", err)
	} else if ok {
		if len(v) != 8 {
			return nil, false, fmt.Errorf("applied index: bad length %d", len(v))
		}
		s.applied = binary.BigEndian.Uint64(v)
	}
	if v, ok, err := getValue(db, keys.Truncated(group)); err != nil {
		return nil, false, fmt.Errorf("load truncated state: %w", err)
	} else if ok {
		if len(v) != 16 {
			return nil, false, fmt.Errorf("truncated state: bad length %d", len(v))
		}
		s.truncIndex = binary.BigEndian.Uint64(v)
		s.truncTerm = binary.BigEndian.Uint64(v[8:])
	}
	s.lastIndex, s.lastTerm = s.truncIndex, s.truncTerm
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: keys.LogPrefix(group), UpperBound: keys.LogEnd(group)})
	if err != nil {
		return nil, false, fmt.Errorf("load last index: %w", err)
	}
	hasLog := it.Last()
	if hasLog {
		var e pb.Entry
		if err := proto.Unmarshal(it.Value(), &e); err != nil {
			_ = it.Close()
			return nil, false, fmt.Errorf("decode last entry: %w", err)
		}
		s.lastIndex, s.lastTerm = e.GetIndex(), e.GetTerm()
	}
	if err := it.Close(); err != nil {
		return nil, false, fmt.Errorf("load last index: %w", err)
	}
	// A snapshot install is one atomic ingestion (state, log and truncation
	// point) followed by the round's HardState write. A crash between the
	// two leaves a HardState whose commit is below the snapshot index (the
	// truncation point), which raft refuses; the snapshot was committed, so
	// raising commit to it is what raft itself does on restore.
	if s.hardState != nil && s.hardState.GetCommit() < s.truncIndex {
		s.hardState.Commit = proto.Uint64(s.truncIndex)
	}
	s.durable = s.applied
	if sdb != db {
		// Two-DB mode: the state is its last flush, a prefix of the applied
		// batches, so applied may be anywhere in [truncIndex, commit]
		// (truncation never passes the durable applied index, and entries
		// are synced before they are applied). The commit index may be
		// older than applied (a commit-only HardState is written unsynced):
		// applied entries were committed, so raise it.
		if s.applied < s.truncIndex {
			return nil, false, fmt.Errorf("state at applied index %d is behind the log's start %d: "+
				"the state was lost (remove the replica's data and let it rejoin)", s.applied, s.truncIndex+1)
		}
		if s.applied > s.lastIndex {
			return nil, false, fmt.Errorf("state at applied index %d is beyond the log's last index %d: "+
				"the log was lost (remove the replica's data and let it rejoin)", s.applied, s.lastIndex)
		}
		if s.hardState != nil && s.hardState.GetCommit() < s.applied {
			s.hardState.Commit = proto.Uint64(s.applied)
		}
	}
	return s, !found && !hasLog && s.truncIndex == 0, nil
}

// InitialState implements raft.Storage.
func (s *storage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var hs *pb.HardState
	if s.hardState != nil {
		hs = proto.CloneOf(s.hardState)
	}
	return hs, proto.CloneOf(s.confState), nil
}

// Entries implements raft.Storage: entries [lo, hi), at most maxSize bytes
// (encoded size) but at least one, from the entry cache if it holds them
// all, else read from Pebble. The returned slice is freshly allocated and
// owned by the caller; the entries must not be modified (cached ones are
// shared).
func (s *storage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	s.mu.Lock()
	first, last := s.truncIndex+1, s.lastIndex
	if lo < first {
		s.mu.Unlock()
		return nil, raft.ErrCompacted
	}
	if hi > last+1 || lo > hi {
		s.mu.Unlock()
		return nil, raft.ErrUnavailable
	}
	if lo == hi {
		s.mu.Unlock()
		return nil, nil
	}
	if ents := s.cachedEntries(lo, hi, maxSize); ents != nil {
		s.mu.Unlock()
		return ents, nil
	}
	s.mu.Unlock()
	it, err := s.db.NewIter(&pebble.IterOptions{
		LowerBound: keys.LogEntry(s.group, lo),
		UpperBound: keys.LogEntry(s.group, hi),
	})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var (
		ents []*pb.Entry
		size uint64
		next = lo
	)
	for ok := it.First(); ok; ok = it.Next() {
		e := &pb.Entry{}
		if err := proto.Unmarshal(it.Value(), e); err != nil {
			return nil, fmt.Errorf("decode log entry: %w", err)
		}
		if e.GetIndex() != next {
			return nil, raft.ErrUnavailable // a hole: the log was truncated under us
		}
		size += uint64(len(it.Value()))
		if len(ents) > 0 && size > maxSize {
			break
		}
		ents = append(ents, e)
		next++
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if len(ents) == 0 {
		return nil, raft.ErrUnavailable
	}
	return ents, nil
}

// cachedEntries returns entries [lo, hi) limited to maxSize as Entries
// does, or nil when the cache does not hold them all. s.mu is held.
func (s *storage) cachedEntries(lo, hi, maxSize uint64) []*pb.Entry {
	if len(s.cache) == 0 || lo < s.cacheFirst || hi > s.cacheFirst+uint64(len(s.cache)) {
		return nil
	}
	c := s.cache[lo-s.cacheFirst : hi-s.cacheFirst]
	n, size := 0, uint64(0)
	for _, ce := range c {
		size += ce.size
		if n > 0 && size > maxSize {
			break
		}
		n++
	}
	ents := make([]*pb.Entry, n)
	for i := range ents {
		ents[i] = c[i].e
	}
	return ents
}

// cacheAppend adds entries just made durable to the entry cache: they
// replace whatever the cache held from their first index on. s.mu is held.
func (s *storage) cacheAppend(ents []*pb.Entry, sizes []uint64) {
	if s.cacheLimit == 0 || len(ents) == 0 {
		return
	}
	lo := ents[0].GetIndex()
	if len(s.cache) > 0 && lo >= s.cacheFirst && lo <= s.cacheFirst+uint64(len(s.cache)) {
		cut := s.cache[lo-s.cacheFirst:]
		for _, ce := range cut {
			s.cacheBytes -= ce.size
		}
		clear(cut)
		s.cache = s.cache[:lo-s.cacheFirst]
	} else {
		s.cacheReset(lo)
	}
	for i, e := range ents {
		s.cache = append(s.cache, cachedEntry{e: e, size: sizes[i]})
		s.cacheBytes += sizes[i]
	}
	for len(s.cache) > 0 && s.cacheBytes > s.cacheLimit {
		s.cachePop()
	}
}

// cacheTrim drops cached entries at or below index. s.mu is held.
func (s *storage) cacheTrim(index uint64) {
	for len(s.cache) > 0 && s.cacheFirst <= index {
		s.cachePop()
	}
}

// cachePop evicts the oldest cached entry. s.mu is held.
func (s *storage) cachePop() {
	s.cacheBytes -= s.cache[0].size
	s.cache[0] = cachedEntry{}
	s.cache = s.cache[1:]
	s.cacheFirst++
}

// cacheReset empties the entry cache; the next entry cached is first.
// s.mu is held.
func (s *storage) cacheReset(first uint64) {
	clear(s.cache)
	s.cache = s.cache[:0]
	s.cacheFirst, s.cacheBytes = first, 0
}

// Term implements raft.Storage.
func (s *storage) Term(i uint64) (uint64, error) {
	s.mu.Lock()
	ti, tt, li, lt := s.truncIndex, s.truncTerm, s.lastIndex, s.lastTerm
	s.mu.Unlock()
	switch {
	case i < ti:
		return 0, raft.ErrCompacted
	case i == ti:
		return tt, nil
	case i > li:
		return 0, raft.ErrUnavailable
	case i == li:
		return lt, nil
	}
	s.mu.Lock()
	if len(s.cache) > 0 && i >= s.cacheFirst && i < s.cacheFirst+uint64(len(s.cache)) {
		t := s.cache[i-s.cacheFirst].e.GetTerm()
		s.mu.Unlock()
		return t, nil
	}
	s.mu.Unlock()
	var e pb.Entry
	found, err := getProto(s.db, keys.LogEntry(s.group, i), &e)
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, raft.ErrUnavailable
	}
	return e.GetTerm(), nil
}

// LastIndex implements raft.Storage.
func (s *storage) LastIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastIndex, nil
}

// FirstIndex implements raft.Storage.
func (s *storage) FirstIndex() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.truncIndex + 1, nil
}

// Snapshot implements raft.Storage. It describes the state machine as it is
// in Pebble: metadata {applied index, its term, ConfState as of applied} and
// no data. The data of a snapshot is the key range [keys.StatePrefix(g),
// keys.StateEnd(g)) as of the applied index: when raft emits the MsgSnap,
// the host takes a Pebble snapshot (applied still equals Metadata.Index on
// the loop) and streams that range out of band (see snapshot.go).
func (s *storage) Snapshot() (*pb.Snapshot, error) {
	s.mu.Lock()
	applied, cs := s.applied, proto.CloneOf(s.confState)
	s.mu.Unlock()
	if applied == 0 {
		return &pb.Snapshot{}, nil
	}
	term, err := s.Term(applied)
	if err != nil {
		return nil, err
	}
	return &pb.Snapshot{Metadata: &pb.SnapshotMetadata{
		Index:     proto.Uint64(applied),
		Term:      proto.Uint64(term),
		ConfState: cs,
	}}, nil
}

// appendState is what stageAppend leaves for commitAppend.
type appendState struct {
	hs             *pb.HardState
	last, lastTerm uint64
	hasEntries     bool
	ents           []*pb.Entry // for the entry cache
	sizes          []uint64    // their encoded sizes
}

// stageAppend writes ents and hs (either may be empty) into b. Entries that
// replace a tail of the log (a new leader's conflicting suffix) overwrite it
// and the entries after the new last index are deleted.
func (s *storage) stageAppend(b *pebble.Batch, ents []*pb.Entry, hs *pb.HardState) (appendState, error) {
	// Validate and encode everything before touching b, so a failure leaves
	// nothing of this group in the shared batch.
	var (
		st   appendState
		hsv  []byte
		vals = make([][]byte, len(ents))
		err  error
	)
	if hs != nil && !raft.IsEmptyHardState(hs) {
		if hsv, err = proto.Marshal(hs); err != nil {
			return st, err
		}
		st.hs = proto.CloneOf(hs)
	}
	var last uint64
	if len(ents) > 0 {
		s.mu.Lock()
		first := s.truncIndex + 1
		last = s.lastIndex
		s.mu.Unlock()
		if ents[0].GetIndex() < first {
			return st, fmt.Errorf("append at %d below first index %d", ents[0].GetIndex(), first)
		}
		if ents[0].GetIndex() > last+1 {
			return st, fmt.Errorf("append at %d leaves a gap after last index %d", ents[0].GetIndex(), last)
		}
		// All entries encoded into one reused buffer: one allocation per
		// large round at most, instead of one per entry.
		size := 0
		for i, e := range ents {
			if i > 0 && e.GetIndex() != ents[i-1].GetIndex()+1 {
				return st, fmt.Errorf("append: index %d after %d", e.GetIndex(), ents[i-1].GetIndex())
			}
			size += proto.Size(e)
		}
		buf := s.enc[:0]
		if cap(buf) < size {
			buf = make([]byte, 0, size)
		}
		for i, e := range ents {
			n := len(buf)
			if buf, err = (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(buf, e); err != nil {
				return st, err
			}
			vals[i] = buf[n:len(buf):len(buf)]
		}
		if cap(buf) <= maxEncBuf {
			s.enc = buf
		} else {
			s.enc = nil
		}
	}
	if hsv != nil {
		if err := b.Set(keys.HardState(s.group), hsv, nil); err != nil {
			return st, err
		}
	}
	if len(ents) == 0 {
		return st, nil
	}
	for i, e := range ents {
		if err := b.Set(keys.LogEntry(s.group, e.GetIndex()), vals[i], nil); err != nil {
			return st, err
		}
	}
	newLast := ents[len(ents)-1]
	if newLast.GetIndex() < last {
		// A new leader replaced our tail: drop what lies past its last entry.
		if err := b.DeleteRange(keys.LogEntry(s.group, newLast.GetIndex()+1), keys.LogEnd(s.group), nil); err != nil {
			return st, err
		}
	}
	st.hasEntries, st.last, st.lastTerm = true, newLast.GetIndex(), newLast.GetTerm()
	st.ents, st.sizes = ents, make([]uint64, len(ents))
	for i, v := range vals {
		st.sizes[i] = uint64(len(v))
	}
	return st, nil
}

// commitAppend publishes a staged append after its batch committed.
func (s *storage) commitAppend(st appendState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.hs != nil {
		s.hardState = st.hs
	}
	if st.hasEntries {
		s.lastIndex, s.lastTerm = st.last, st.lastTerm
		s.cacheAppend(st.ents, st.sizes)
	}
}

// stageTruncate deletes the log up to and including index into b and
// records it as the truncation point. It reports false when there is nothing
// to remove.
func (s *storage) stageTruncate(b *pebble.Batch, index uint64) (term uint64, ok bool, err error) {
	s.mu.Lock()
	ti, last := s.truncIndex, s.lastIndex
	s.mu.Unlock()
	if index <= ti || index > last {
		return 0, false, nil
	}
	if term, err = s.Term(index); err != nil {
		return 0, false, err
	}
	if err := b.DeleteRange(keys.LogEntry(s.group, ti+1), keys.LogEntry(s.group, index+1), nil); err != nil {
		return 0, false, err
	}
	if err := b.Set(keys.Truncated(s.group), snapMark(index, term), nil); err != nil {
		return 0, false, err
	}
	return term, true, nil
}

// stageApplied writes the applied index and, if cs is not nil, the
// ConfState into an apply batch.
func (s *storage) stageApplied(b *pebble.Batch, applied uint64, cs *pb.ConfState) error {
	if err := b.Set(keys.AppliedIndex(s.group), binary.BigEndian.AppendUint64(nil, applied), nil); err != nil {
		return err
	}
	if cs == nil {
		return nil
	}
	v, err := proto.Marshal(cs)
	if err != nil {
		return err
	}
	return b.Set(keys.ConfState(s.group), v, nil)
}

// commitApply publishes an apply batch's effects after it committed.
// truncIndex is 0 when the round did not truncate.
func (s *storage) commitApply(applied uint64, cs *pb.ConfState, truncIndex, truncTerm uint64) {
	s.mu.Lock()
	s.applied = applied
	if cs != nil {
		s.confState = proto.CloneOf(cs)
	}
	s.mu.Unlock()
	s.commitTruncate(truncIndex, truncTerm)
}

// restore publishes an installed snapshot: the log is empty up to and
// including the snapshot index, which is also the applied index.
func (s *storage) restore(meta *pb.SnapshotMetadata) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncIndex, s.truncTerm = meta.GetIndex(), meta.GetTerm()
	s.lastIndex, s.lastTerm = meta.GetIndex(), meta.GetTerm()
	s.cacheReset(meta.GetIndex() + 1)
	s.applied = meta.GetIndex()
	s.durable = max(s.durable, meta.GetIndex()) // installSnapshot made it durable
	s.confState = proto.CloneOf(meta.GetConfState())
	if s.confState == nil {
		s.confState = &pb.ConfState{}
	}
}

// bounds returns the first and last index and the applied index.
func (s *storage) bounds() (first, last, applied uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.truncIndex + 1, s.lastIndex, s.applied
}

// appliedConfStateRef is the applied ConfState itself: a new pointer
// after every change (it is replaced, never modified), so callers can
// cache what they derive from it. It must not be modified.
func (s *storage) appliedConfStateRef() *pb.ConfState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.confState
}

type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func getValue(r getter, key []byte) ([]byte, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	return out, true, closer.Close()
}

func getProto(r getter, key []byte, m proto.Message) (bool, error) {
	v, ok, err := getValue(r, key)
	if err != nil || !ok {
		return false, err
	}
	return true, proto.Unmarshal(v, m)
}

// setDurable records that the state as of applied is on disk (two-DB
// mode: read before a flush of the state DB that then succeeded).
func (s *storage) setDurable(applied uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.durable = max(s.durable, applied)
}

// durableApplied is the highest applied index known to be on disk.
func (s *storage) durableApplied() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable
}

// commitTruncate publishes a log truncation after its batch committed.
func (s *storage) commitTruncate(index, term uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index > s.truncIndex {
		s.truncIndex, s.truncTerm = index, term
		s.cacheTrim(index)
	}
}
