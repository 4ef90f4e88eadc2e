package raftnode

import (
	"encoding/binary"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/quorumq/quorumq/internal/keys"
)

// Two-DB mode (Config.StateDB): the state DB runs without a WAL, so what
// the apply batches wrote is on disk only after a flush of its memtables,
// and a crash loses everything since the last one. The state then is a
// prefix of the applied batches (each batch is atomic in the memtable; a
// flush takes whole memtables), with its own applied index, and raft
// replays the log from there. So a replica may truncate its log only up
// to the applied index a flush made durable: the replicated truncation
// entry still carries the leader's target, and each replica truncates
// locally to min(target, durable applied), catching up on later ticks
// what it had to defer (truncateLocal).
//
// The flusher makes the state durable: it reads every group's applied
// index, then flushes; once the flush returned, those indexes are on disk
// (their batches were committed before the read, so they were in the
// flushed memtables). It flushes when StateFlushBytes of log were written
// since the last flush (the loop kicks it), or StateFlushInterval passed
// with something applied; snapshot installs and group removals flush
// themselves, and Stop flushes last.

// flusher is the host's state flush goroutine (two-DB mode); it stops
// with the loop.
func (h *Host) flusher() {
	defer close(h.flushDone)
	ticker := time.NewTicker(min(h.cfg.StateFlushInterval, time.Second))
	defer ticker.Stop()
	last := time.Now()
	for {
		select {
		case <-h.stopc:
			return
		case <-h.flushKick:
		case <-ticker.C:
		}
		due := h.logBytes.Load()-h.flushedBytes.Load() >= h.cfg.StateFlushBytes
		if !due && time.Since(last) >= h.cfg.StateFlushInterval {
			due = h.undurable()
		}
		if !due {
			continue
		}
		last = time.Now()
		if err := h.flushState(); err != nil {
			h.log.Error("flush state", "err", err)
			// Every round past the threshold kicks again: do not retry
			// (and log) once per round while the store fails.
			select {
			case <-h.stopc:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		h.maybeFlushLog()
	}
}

// maybeFlushLog flushes the log DB (flusher, after a state flush) once
// LogFlushBytes of log were written since its last flush by the host: two
// ticks after the state flush, when the loop has truncated every group's
// log behind it, so the flushed memtable holds only the retained entries.
// Left to itself the log DB flushes when a memtable is full, holding
// whatever the truncations had not reached yet.
func (h *Host) maybeFlushLog() {
	if h.cfg.LogFlushBytes <= 0 {
		return
	}
	n := h.logBytes.Load()
	if n-h.logFlushed < h.cfg.LogFlushBytes {
		return
	}
	select {
	case <-h.stopc:
		return
	case <-time.After(2 * h.cfg.TickInterval):
	}
	if _, err := h.db.AsyncFlush(); err != nil {
		h.log.Error("flush log", "err", err)
		return
	}
	h.logFlushed = n
}

// undurable reports whether some group applied beyond what is durable.
func (h *Host) undurable() bool {
	h.mu.Lock()
	gs := slices.Clone(h.order)
	h.mu.Unlock()
	for _, g := range gs {
		if _, _, applied := g.st.bounds(); applied > g.st.durableApplied() {
			return true
		}
	}
	return false
}

// flushState flushes the state DB and records, per group, the applied
// index read before the flush as durable. Safe to call from any goroutine.
func (h *Host) flushState() error {
	bytes := h.logBytes.Load()
	h.mu.Lock()
	gs := slices.Clone(h.order)
	h.mu.Unlock()
	applied := make([]uint64, len(gs))
	for i, g := range gs {
		_, _, applied[i] = g.st.bounds()
	}
	if err := h.sdb.Flush(); err != nil {
		return err
	}
	for i, g := range gs {
		g.st.setDurable(applied[i])
	}
	for {
		old := h.flushedBytes.Load()
		if old >= bytes || h.flushedBytes.CompareAndSwap(old, bytes) {
			break
		}
	}
	h.stateFlushes.Add(1)
	return nil
}

// StateFlushes returns the number of flushes of the state DB the host
// made (two-DB mode).
func (h *Host) StateFlushes() uint64 { return h.stateFlushes.Load() }

// wroteLog counts log bytes (loop) and kicks the flusher past the
// threshold.
func (h *Host) wroteLog(n int) {
	if !h.split {
		return
	}
	if h.logBytes.Add(int64(n))-h.flushedBytes.Load() >= h.cfg.StateFlushBytes {
		select {
		case h.flushKick <- struct{}{}:
		default:
		}
	}
}

// truncateLocal truncates the group's log (two-DB mode, on the loop) up
// to the highest applied truncation target, but not past the durable
// applied index. The write needs no sync: losing it leaves a longer log.
func (h *Host) truncateLocal(g *group) error {
	if !h.split || g.truncWant == 0 {
		return nil
	}
	to := min(g.truncWant, g.st.durableApplied())
	if first, _, _ := g.st.bounds(); to < first {
		return nil
	}
	b := h.db.NewBatch()
	defer b.Close()
	term, ok, err := g.st.stageTruncate(b, to)
	if err != nil || !ok {
		return err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	g.st.commitTruncate(to, term)
	if g.refreshStatus() { // Status shows the new first index
		h.broadcast()
	}
	return nil
}

// recoverRemove finishes a group removal a crash interrupted (two-DB
// mode): the log is gone and the marker says the state range may still
// be there. AddGroup calls it first.
func (h *Host) recoverRemove(group uint64) error {
	if !h.split {
		return nil
	}
	_, marked, err := getValue(h.db, keys.RemoveMarker(group))
	if err != nil || !marked {
		return err
	}
	if err := h.clearState(group); err != nil {
		return err
	}
	if err := h.db.Delete(keys.RemoveMarker(group), pebble.Sync); err != nil {
		return err
	}
	h.log.Warn("finished an interrupted group removal", "group", group)
	return nil
}

// clearState deletes the group's state range from the state DB and
// flushes it (two-DB mode).
func (h *Host) clearState(group uint64) error {
	if err := h.sdb.DeleteRange(keys.StatePrefix(group), keys.StateEnd(group), pebble.NoSync); err != nil {
		return err
	}
	return h.sdb.Flush()
}

// snapMark encodes a snapshot's (index, term) for a marker or Truncated.
func snapMark(index, term uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, index), term)
}
