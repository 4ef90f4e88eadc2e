package raftnode

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/quorumq/quorumq/internal/keys"
)

// Snapshots travel out of band, as in CockroachDB: raft's MsgSnap carries
// only the metadata (index, term, ConfState); the data, the group's state key
// range as of that index, is streamed by the transport in chunks of
// key/value records, from a goroutine the host owns, so the loop keeps
// serving. The receiver writes the records into an sstable and ingests it
// when raft's Ready
// carries the snapshot. See DESIGN.md for the crash-safe switch.

// SnapshotData yields a snapshot's data in chunks.
type SnapshotData interface {
	// Next returns the next chunk, or io.EOF after the last one. The
	// caller owns the returned slice. A chunk is a sequence of records:
	// uvarint key length, key, uvarint value length, value; keys strictly
	// increasing within the group's state range.
	Next() ([]byte, error)
}

// SnapshotTransport is a Transport that can stream snapshots.
type SnapshotTransport interface {
	Transport
	// SendSnapshot streams one snapshot to env.Msg.To: env.Msg is the
	// MsgSnap (metadata only, owned by the callee and not to be modified),
	// data yields the state. It blocks until the receiver accepted the
	// snapshot (its ReceiveSnapshot returned nil) or the transfer failed;
	// ctx ends it early. The host calls it from its own goroutine.
	SendSnapshot(ctx context.Context, env Envelope, data SnapshotData) error
}

// SnapshotReceiver receives streamed snapshots; *Host implements it.
type SnapshotReceiver interface {
	ReceiveSnapshot(ctx context.Context, group uint64, m *pb.Message, data SnapshotData) error
}

var _ SnapshotReceiver = (*Host)(nil)

// Errors of ReceiveSnapshot (the sender reports the snapshot as failed to
// raft, which retries later).
var (
	errSnapshotBusy  = errors.New("raftnode: a snapshot for this group is already being received")
	errSnapshotStale = errors.New("raftnode: snapshot is not newer than the applied state")
)

const snapFilePrefix = "snap-"

// installFile is where a group's snapshot sstable waits for ingestion once
// the install began (a fixed name, so recovery finds it).
func (h *Host) installFile(group uint64) string {
	return h.snapFS.PathJoin(h.snapDir, fmt.Sprintf("install-%d.sst", group))
}

// appendRecord appends one key/value record of a snapshot chunk.
func appendRecord(b, k, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(k)))
	b = append(b, k...)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// nextRecord decodes the first record of a chunk.
func nextRecord(b []byte) (k, v, rest []byte, err error) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return nil, nil, nil, errors.New("snapshot chunk: bad key length")
	}
	k, b = b[w:w+int(n)], b[w+int(n):]
	n, w = binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return nil, nil, nil, errors.New("snapshot chunk: bad value length")
	}
	return k, b[w : w+int(n)], b[w+int(n):], nil
}

func recordLen(k, v []byte) int {
	return 2*binary.MaxVarintLen64 + len(k) + len(v)
}

// snapshotReader reads a group's state range from a Pebble snapshot in
// chunks of about max bytes. close releases it.
type snapshotReader struct {
	snap   *pebble.Snapshot
	group  uint64
	max    int
	ctx    context.Context // ends the pacer's wait
	pace   *snapshotPacer  // nil: unlimited
	it     *pebble.Iterator
	valid  bool
	err    error // sticky; io.EOF at the end
	chunks int
	bytes  int
}

func (r *snapshotReader) Next() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.it == nil {
		it, err := r.snap.NewIter(&pebble.IterOptions{
			LowerBound: keys.StatePrefix(r.group),
			UpperBound: keys.StateEnd(r.group),
		})
		if err != nil {
			r.err = err
			return nil, err
		}
		r.it, r.valid = it, it.First()
	}
	var b []byte
	for r.valid {
		v, err := r.it.ValueAndErr()
		if err != nil {
			r.err = err
			return nil, err
		}
		if len(b) > 0 && len(b)+recordLen(r.it.Key(), v) > r.max {
			break
		}
		b = appendRecord(b, r.it.Key(), v)
		r.valid = r.it.Next()
	}
	if len(b) == 0 {
		if err := r.it.Error(); err != nil {
			r.err = err
			return nil, err
		}
		r.err = io.EOF
		return nil, io.EOF
	}
	if err := r.pace.wait(r.ctx, len(b)); err != nil {
		r.err = err
		return nil, err
	}
	r.chunks++
	r.bytes += len(b)
	return b, nil
}

func (r *snapshotReader) close() {
	if r.it != nil {
		_ = r.it.Close()
	}
	_ = r.snap.Close()
}

// startSnapshot streams the snapshot a MsgSnap announces, off the loop. It
// runs on the loop, where the applied index still equals the metadata's
// (raft took the metadata from Storage.Snapshot since the last apply), so a
// Pebble snapshot taken now is exactly that state. false: it could not
// start; the caller reports the snapshot as failed.
func (h *Host) startSnapshot(g *group, m *pb.Message) bool {
	st, ok := h.cfg.Transport.(SnapshotTransport)
	if !ok {
		if !g.snapWarned {
			g.snapWarned = true
			g.log.Warn("peer needs a snapshot; the transport cannot send snapshots", "peer", m.GetTo())
		}
		return false
	}
	meta := m.GetSnapshot().GetMetadata()
	if _, _, applied := g.st.bounds(); meta.GetIndex() != applied {
		return false
	}
	h.mu.Lock()
	if h.stopped || h.sending >= h.cfg.MaxSnapshotSends {
		h.mu.Unlock()
		return false
	}
	h.sending++
	h.bg.Add(1)
	h.mu.Unlock()
	r := &snapshotReader{snap: h.sdb.NewSnapshot(), group: g.id, max: h.cfg.SnapshotChunkBytes, ctx: h.ctx, pace: h.snapPace}
	go func() {
		defer h.bg.Done()
		start := time.Now()
		err := st.SendSnapshot(h.ctx, Envelope{Group: g.id, Msg: m}, r)
		r.close()
		h.mu.Lock()
		h.sending--
		h.mu.Unlock()
		status := raft.SnapshotFinish
		if err != nil {
			status = raft.SnapshotFailure
			g.log.Warn("send snapshot failed", "peer", m.GetTo(), "index", meta.GetIndex(), "err", err)
		} else {
			h.snapsSent.Add(1)
			g.log.Info("snapshot sent", "peer", m.GetTo(), "index", meta.GetIndex(),
				"chunks", r.chunks, "bytes", r.bytes, "took", time.Since(start))
		}
		g.enqueueSnapReport(m.GetTo(), status)
		h.signal()
	}()
	return true
}

// ReceiveSnapshot receives a snapshot for group: m is the MsgSnap (metadata
// only), data yields the state range in chunks. The records are written to
// an sstable under SnapshotDir as they arrive (memory stays bounded whatever
// the size); once complete, the MsgSnap is handed to raft and the call
// returns. The state is replaced when raft's Ready carries the snapshot
// (see installSnapshot). One snapshot per group is received at a time.
// It runs on the caller's goroutine (a transport's) and stops with ctx or
// Stop.
func (h *Host) ReceiveSnapshot(ctx context.Context, group uint64, m *pb.Message, data SnapshotData) error {
	meta := m.GetSnapshot().GetMetadata()
	if m.GetType() != pb.MsgSnap || meta.GetIndex() == 0 {
		return errors.New("raftnode: ReceiveSnapshot: not a MsgSnap with metadata")
	}
	g, err := h.group(group)
	if err != nil {
		return err
	}
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return ErrStopped
	}
	h.bg.Add(1)
	h.mu.Unlock()
	defer h.bg.Done()
	if !g.beginReceive() {
		return errSnapshotBusy
	}
	defer g.endReceive()
	if st, _ := g.statusSnapshot(); meta.GetIndex() <= st.Applied {
		return fmt.Errorf("%w: index %d, applied %d", errSnapshotStale, meta.GetIndex(), st.Applied)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(h.ctx, cancel)()

	path, err := h.writeSnapshotFile(ctx, group, meta, data)
	if err != nil {
		return fmt.Errorf("raftnode: group %d: receive snapshot %d: %w", group, meta.GetIndex(), err)
	}
	s := &stagedSnap{msg: m, path: path, index: meta.GetIndex(), term: meta.GetTerm()}
	if err := g.enqueueSnapshot(s); err != nil {
		_ = h.snapFS.Remove(path)
		return err
	}
	h.snapsReceived.Add(1)
	g.log.Info("snapshot received", "from", m.GetFrom(), "index", meta.GetIndex(), "term", meta.GetTerm())
	h.signal()
	return nil
}

// writeSnapshotFile writes the received state records into an sstable for
// ingestion, checking that keys are in the group's state range, strictly
// increasing, and that the applied index is the metadata's. It returns the
// file's path.
func (h *Host) writeSnapshotFile(ctx context.Context, group uint64, meta *pb.SnapshotMetadata, data SnapshotData) (path string, err error) {
	name := h.snapFS.PathJoin(h.snapDir, fmt.Sprintf("%s%d-%d-%d.sst", snapFilePrefix, group, meta.GetIndex(), h.nextID.Add(1)))
	f, err := h.snapFS.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return "", err
	}
	w := sstable.NewWriter(objstorageprovider.NewFileWritable(f), sstable.WriterOptions{
		TableFormat: h.sdb.FormatMajorVersion().MaxTableFormat(),
	})
	defer func() {
		if w != nil {
			_ = w.Close()
		}
		if err != nil {
			_ = h.snapFS.Remove(name)
		}
	}()
	lo, hi, appliedKey := keys.StatePrefix(group), keys.StateEnd(group), keys.AppliedIndex(group)
	var last []byte
	sawApplied := false
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		chunk, err := data.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
		for len(chunk) > 0 {
			k, v, rest, err := nextRecord(chunk)
			if err != nil {
				return "", err
			}
			if bytes.Compare(k, lo) < 0 || bytes.Compare(k, hi) >= 0 || (last != nil && bytes.Compare(k, last) <= 0) {
				return "", fmt.Errorf("snapshot key %s out of order or range", keys.Pretty(k))
			}
			if bytes.Equal(k, appliedKey) {
				if len(v) != 8 || binary.BigEndian.Uint64(v) != meta.GetIndex() {
					return "", fmt.Errorf("snapshot data is at applied index %x, metadata says %d", v, meta.GetIndex())
				}
				sawApplied = true
			}
			if err := w.Set(k, v); err != nil {
				return "", err
			}
			last = append(last[:0], k...)
			chunk = rest
		}
	}
	if !sawApplied {
		return "", errors.New("snapshot data has no applied index")
	}
	err = w.Close() // syncs and closes the file
	w = nil
	if err != nil {
		return "", err
	}
	return name, nil
}

// installSnapshot makes a snapshot raft restored (the Ready's Snapshot)
// the group's state, crash-safely:
//
//  1. move the staged sstable to installFile(g) and sync the directory;
//  2. one synced batch: DeleteRange of the whole log and the whole state
//     range, the truncation point (index, term), and keys.RestoreMarker(g);
//  3. ingest the sstable (atomic, durable; Pebble removes the file after);
//  4. the round's shared batch deletes the marker (the caller adds it, with
//     the HardState whose commit is the snapshot index).
//
// A crash before 2 leaves the old state (and a stray file, removed at the
// next AddGroup); after 2 the marker makes AddGroup finish the job
// (recoverInstall): ingest the file if it is still there, else the ingest
// had completed. It runs on the loop before the round's shared batch.
func (h *Host) installSnapshot(g *group, snap *pb.Snapshot) error {
	meta := snap.GetMetadata()
	var s *stagedSnap
	for _, c := range g.stepped {
		if c.index == meta.GetIndex() && c.term == meta.GetTerm() && !c.consumed {
			s = c
		}
	}
	if s == nil {
		return fmt.Errorf("raft restored snapshot %d (term %d) without staged data", meta.GetIndex(), meta.GetTerm())
	}
	s.consumed = true
	if r, ok := g.sm.(Restoring); ok {
		r.Restoring()
	}
	path := h.installFile(g.id)
	if err := h.snapFS.Rename(s.path, path); err != nil {
		return fmt.Errorf("stage snapshot file: %w", err)
	}
	if err := syncDir(h.snapFS, h.snapDir); err != nil {
		return fmt.Errorf("stage snapshot file: %w", err)
	}
	if h.split {
		if err := h.installSplit(g.id, meta.GetIndex(), meta.GetTerm()); err != nil {
			return err
		}
		g.st.restore(meta)
		return nil
	}
	b := h.db.NewBatch()
	defer b.Close()
	v := snapMark(meta.GetIndex(), meta.GetTerm())
	for _, err := range []error{
		b.DeleteRange(keys.LogPrefix(g.id), keys.LogEnd(g.id), nil),
		b.DeleteRange(keys.StatePrefix(g.id), keys.StateEnd(g.id), nil),
		b.Set(keys.Truncated(g.id), v, nil),
		b.Set(keys.RestoreMarker(g.id), v, nil),
	} {
		if err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("clear state for snapshot %d: %w", meta.GetIndex(), err)
	}
	if err := h.db.Ingest(context.Background(), []string{path}); err != nil {
		return fmt.Errorf("ingest snapshot %d: %w", meta.GetIndex(), err)
	}
	g.st.restore(meta)
	return nil
}

// recoverInstall finishes a snapshot install a crash interrupted (see
// installSnapshot) and removes a stray install file. AddGroup calls it
// before loading the group's storage.
func (h *Host) recoverInstall(group uint64) error {
	if h.split {
		return h.recoverInstallSplit(group)
	}
	path, exists, mark, marked, err := h.installLeft(group)
	if err != nil {
		return err
	}
	switch {
	case marked && !exists:
		// Pebble removes the file only after a durable ingest, so the
		// state must be the snapshot's. If it is not, the file was lost
		// (a SnapshotDir that does not survive restarts): the state is
		// incomplete and only an operator can rebuild this replica.
		v, _, err := getValue(h.db, keys.AppliedIndex(group))
		if err != nil {
			return err
		}
		if len(mark) != 16 || len(v) != 8 || binary.BigEndian.Uint64(v) != binary.BigEndian.Uint64(mark) {
			return fmt.Errorf("snapshot install was interrupted and %s is gone: the group's state is incomplete; "+
				"remove the replica's data and let it rejoin", path)
		}
	case marked && exists:
		// State and log were cleared; the ingest may or may not have
		// happened (Pebble removes the file only after a durable
		// ingest). The state range is cleared again first: ingesting the
		// same records over them would set each key twice with no delete
		// between, and the store removes keys set once with SingleDelete
		// (store/DESIGN.md, "Single deletes"), which would bring the
		// first set back.
		if err := h.db.DeleteRange(keys.StatePrefix(group), keys.StateEnd(group), pebble.Sync); err != nil {
			return fmt.Errorf("finish snapshot install: %w", err)
		}
		if err := h.db.Ingest(context.Background(), []string{path}); err != nil {
			return fmt.Errorf("finish snapshot install: %w", err)
		}
	case exists:
		if err := h.snapFS.Remove(path); err != nil {
			return err
		}
	}
	if marked {
		if err := h.db.Delete(keys.RestoreMarker(group), pebble.Sync); err != nil {
			return err
		}
		h.log.Warn("finished an interrupted snapshot install", "group", group)
	}
	return nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}

// dropStepped removes the files of snapshots stepped this round that raft
// did not restore (stale or superseded).
func (h *Host) dropStepped(g *group) {
	for _, s := range g.stepped {
		if !s.consumed {
			_ = h.snapFS.Remove(s.path)
		}
	}
	g.stepped = nil
}

// dropStaged removes the files of received snapshots never stepped.
func (h *Host) dropStaged(g *group) {
	for _, s := range g.takeSnaps() {
		_ = h.snapFS.Remove(s.path)
	}
	h.dropStepped(g)
}

// cleanSnapshotDir creates the snapshot directory and removes snapshot
// files a previous run left (a crash while receiving).
func (h *Host) cleanSnapshotDir() error {
	if err := h.snapFS.MkdirAll(h.snapDir, 0o755); err != nil {
		return err
	}
	// The directory's own entry must be durable, or an install file
	// synced in it may vanish with it in a crash.
	if err := syncDir(h.snapFS, h.snapFS.PathDir(h.snapDir)); err != nil {
		return err
	}
	names, err := h.snapFS.List(h.snapDir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, snapFilePrefix) && strings.HasSuffix(n, ".sst") {
			if err := h.snapFS.Remove(h.snapFS.PathJoin(h.snapDir, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// installSplit installs a snapshot in two-DB mode, after installFile(g)
// was staged and its directory synced:
//
//  1. the log DB records the restore marker (index, term), synced;
//  2. the state DB: DeleteRange of the state range, ingest of a hard link
//     to the install file (Pebble removes what it ingests, and an ingest
//     into a DB without a WAL is durable only at the next flush), flush:
//     the state is now the snapshot's, durably;
//  3. the log DB, synced: DeleteRange of the log, Truncated = (index,
//     term), marker deleted;
//  4. the install file is removed.
//
// The round's shared batch then writes the HardState (commit = index; a
// crash before it leaves a commit below the truncation point, which
// loadStorage raises). A crash before 1 leaves the old state and a stray
// file (removed at the next AddGroup); after 1 the marker and the install
// file (removed only after the marker) make AddGroup redo 2 and 3, which
// are idempotent (recoverInstallSplit). So the state the log DB points at
// is always complete: the log never records a snapshot before the state
// is durable.
func (h *Host) installSplit(group, index, term uint64) error {
	h.hook("install-staged")
	if err := h.db.Set(keys.RestoreMarker(group), snapMark(index, term), pebble.Sync); err != nil {
		return fmt.Errorf("record snapshot install %d: %w", index, err)
	}
	return h.finishInstallSplit(group, index, term)
}

// finishInstallSplit is steps 2-4 of installSplit.
func (h *Host) finishInstallSplit(group, index, term uint64) error {
	h.hook("install-marked")
	path := h.installFile(group)
	link := h.snapFS.PathJoin(h.snapDir, fmt.Sprintf("%singest-%d.sst", snapFilePrefix, group))
	_ = h.snapFS.Remove(link)
	if err := h.snapFS.Link(path, link); err != nil {
		return fmt.Errorf("link snapshot %d for ingestion: %w", index, err)
	}
	if err := h.sdb.DeleteRange(keys.StatePrefix(group), keys.StateEnd(group), pebble.NoSync); err != nil {
		_ = h.snapFS.Remove(link)
		return fmt.Errorf("clear state for snapshot %d: %w", index, err)
	}
	if err := h.sdb.Ingest(context.Background(), []string{link}); err != nil {
		_ = h.snapFS.Remove(link)
		return fmt.Errorf("ingest snapshot %d: %w", index, err)
	}
	h.hook("install-ingested")
	if err := h.sdb.Flush(); err != nil {
		return fmt.Errorf("flush snapshot %d: %w", index, err)
	}
	h.hook("install-flushed")
	b := h.db.NewBatch()
	defer b.Close()
	for _, err := range []error{
		b.DeleteRange(keys.LogPrefix(group), keys.LogEnd(group), nil),
		b.Set(keys.Truncated(group), snapMark(index, term), nil),
		b.Delete(keys.RestoreMarker(group), nil),
	} {
		if err != nil {
			return err
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("record snapshot %d in the log: %w", index, err)
	}
	h.hook("install-logged")
	if err := h.snapFS.Remove(path); err != nil {
		// The install is durable: the group's next AddGroup removes the
		// stray file (recoverInstallSplit); no reason to halt the group.
		h.log.Warn("remove installed snapshot file", "group", group, "err", err)
	}
	return nil
}

// recoverInstallSplit is recoverInstall in two-DB mode (see installSplit).
func (h *Host) recoverInstallSplit(group uint64) error {
	path, exists, mark, marked, err := h.installLeft(group)
	if err != nil {
		return err
	}
	switch {
	case marked && (!exists || len(mark) != 16):
		return fmt.Errorf("snapshot install was interrupted and %s is gone: the group's state is incomplete; "+
			"remove the replica's data and let it rejoin", path)
	case marked:
		if err := h.finishInstallSplit(group, binary.BigEndian.Uint64(mark), binary.BigEndian.Uint64(mark[8:])); err != nil {
			return fmt.Errorf("finish snapshot install: %w", err)
		}
		h.log.Warn("finished an interrupted snapshot install", "group", group)
	case exists:
		return h.snapFS.Remove(path)
	}
	return nil
}

// installLeft is what an interrupted install left of a group: its install
// file (path, whether it exists) and its restore marker (value, whether it
// is set).
func (h *Host) installLeft(group uint64) (path string, exists bool, mark []byte, marked bool, err error) {
	path = h.installFile(group)
	_, statErr := h.snapFS.Stat(path)
	if statErr != nil && !errors.Is(statErr, os.ErrNotExist) {
		return path, false, nil, false, statErr
	}
	mark, marked, err = getValue(h.db, keys.RestoreMarker(group))
	return path, statErr == nil, mark, marked, err
}
