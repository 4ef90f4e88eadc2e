// Package store is the queue state machine of one shard: a pure function of
// (state in Pebble, command) that the Raft host calls for every committed
// entry. It knows nothing of Raft, gRPC or clocks; see DESIGN.md for the key
// layout and the determinism contract.
package store

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// CommandVersion is the only Command envelope version this store applies.
const CommandVersion = 1

// Store applies commands to one shard's state and answers local reads of it.
//
// Apply is called by one goroutine at a time (the shard's apply loop); the
// read methods may run concurrently with it and see committed state only.
type Store struct {
	db         *pebble.DB
	shard      uint64
	keysRead   atomic.Uint64
	pointsRead atomic.Uint64

	// dedup counts the short-lived record keys by hash (dedupfilter.go):
	// a send's idempotency-key miss skips Pebble. nil: no filter.
	dedup *dedupFilter
	// hot caches catalog and QueueOrder values for Apply (hotkeys.go).
	hot *hotKeys
	// views caches them for read-only views (hotkeys.go).
	views viewHot
	// lastIndex is the last apply index seen.
	lastIndex uint64

	// Test hooks (never set outside tests). plainDeletes: every delete is
	// a Delete, as before single deletes (the reference a run with single
	// deletes must match). overwriteLeases: a lease record is rewritten in
	// place even where the set-once rule wants a single delete before it,
	// so its removal breaks the rule (the misuse the checks must catch).
	plainDeletes, overwriteLeases bool

	// Scratch buffers of Apply (one goroutine at a time): the batch copies
	// what it is given, so one buffer serves every write.
	valBuf, idxBuf, leaseBuf, idemBuf []byte
}

// New returns the store of shard in db. What it keeps besides read counters
// is a cache of the state, built as it is used, so it may be created at any
// time (after a restart or a snapshot install) without loading anything.
func New(db *pebble.DB, shard uint64) *Store {
	return &Store{db: db, shard: shard, dedup: newDedupFilter(), hot: newHotKeys(shard)}
}

// Shard returns the shard id.
func (s *Store) Shard() uint64 { return s.shard }

// KeysRead returns the number of keys read so far (iterator positions and
// point gets) by Apply and the read methods. Tests use it to assert that a
// filtered receive reads O(matched) keys, not the backlog.
func (s *Store) KeysRead() uint64 { return s.keysRead.Load() }

// PointsRead returns the number of internal points (tombstones included)
// the store's iterators passed, as Pebble counts them: a walk over the
// tombstones of deleted messages shows here, not in KeysRead.
func (s *Store) PointsRead() uint64 { return s.pointsRead.Load() }

// Result is the outcome of one applied command. Apply returns it as `any` to
// fit the Raft host's interface; the proposer type-asserts *Result.
type Result struct {
	// Err is the whole command's outcome (nil: ok), one of the sentinels or
	// a *FieldError.
	Err error
	// Tenant and Queue name the queue touched, if any.
	Tenant, Queue string
	// Node is the node record after RegisterNode, AdmitNode or
	// SetNodeState (RegisterNode's ErrIncarnationMismatch: the record).
	Node *storepb.NodeRecord
	// Layout is the shard layout after AddShards (with
	// ErrShardCountChanged: the current one).
	Layout *storepb.ShardLayout
	// QueueInfo is the queue after CreateQueue / UpdateQueue.
	QueueInfo *QueueInfo
	// TenantRecord is the tenant after SetTenantQuota.
	TenantRecord *storepb.TenantRecord
	// Sent has one outcome per SendEntry, in order.
	Sent []SendOutcome
	// Received are the leased messages, oldest first (on a FIFO queue:
	// group by group, oldest head first, each group's messages in seq
	// order).
	Received []Received
	// Replayed: a Receive whose receive_attempt_id named an earlier receive
	// with all its messages unchanged; Received repeats that receive (same
	// receipt handles) and nothing changed. Count its messages once.
	Replayed bool
	// Entries has one outcome per Delete handle, VisibilityChange or
	// DeliverOutbox entry, in order (nil: ok).
	Entries []error
	// Moved counts messages Redrive moved to the outbox.
	Moved int64
	// Removed counts records Tick removed.
	Removed int
	// Woken: messages became visible at the command time (send without delay,
	// visibility set to 0, outbox delivery): wake long polls of Touched or
	// Tenant/Queue.
	Woken bool
	// OutboxAdded: dead-letter moves or a redrive added outbox entries: wake
	// the relay.
	OutboxAdded bool
	// DeadLettered counts messages a Receive (delivery limit, time to live)
	// or a Send (overflow drop_oldest) moved toward the queue's dead-letter
	// queue. A Tick's expiry moves are not counted (a Tick names no queue).
	DeadLettered int
	// VisibleAtMs is when RescheduleMessage made the message visible.
	VisibleAtMs int64
	// VisibleAt has, per Nack entry that succeeded, when the message is
	// visible again (Unix ms).
	VisibleAt []int64
	// Dropped counts messages removed without a dead-letter queue to go
	// to: expired (time to live) by a Receive or Tick, or pushed out of a
	// full queue (overflow drop_oldest) by a Send.
	Dropped int
	// Touched lists the queues DeliverOutbox inserted into, in first-touch
	// order.
	Touched []QueueRef
	// Topic is the outcome of a topic command (topics.go), else nil.
	Topic *TopicResult
}

// QueueRef names a queue.
type QueueRef struct{ Tenant, Name string }

// SendOutcome is the result of one SendEntry.
type SendOutcome struct {
	MessageID string
	Seq       uint64
	// Duplicate: the idempotency key, or on a FIFO queue the deduplication
	// id, was seen within its window; this is the first send's outcome
	// (its message id and seq) and nothing was stored.
	Duplicate bool
	Err       error
}

// Received is one leased message. Message is owned by the caller; its
// body and attributes may still be encoded (Whole decodes them).
type Received struct {
	Message       *storepb.MessageRecord
	ReceiptHandle []byte
}

// QueueInfo is a queue's catalog record and approximate depth. Record never
// carries the handle key.
type QueueInfo struct {
	Record *storepb.QueueRecord
	Stats  Stats
}

// Stats are a queue's approximate depth at a time: visible (due now), in
// flight (received, lease not ended) and delayed (never received, not yet
// due), and the stored message and byte counters (for quotas).
type Stats struct {
	Visible, InFlight, Delayed int64
	Messages, Bytes            int64
}

// Apply implements the Raft host's state machine. It decodes a
// storepb.Command from data and applies it, writing only into b, an indexed
// batch that also serves its reads (so later commands of one apply round see
// earlier ones). It returns a *Result. The error return is only for storage
// failures, after which the replica must halt: the batch is then partially
// written and must be discarded. A command that does not decode gives
// Result{Err: ErrInvalidCommand} and writes nothing. Apply does not write the
// applied index (the host does, in the same batch); index is accepted for the
// host's contract and to notice a state rebuilt from the start (the index
// runs backwards), which drops the store's caches.
func (s *Store) Apply(b *pebble.Batch, index uint64, data []byte) (any, error) {
	if index < s.lastIndex {
		s.dropCaches() // the state was rebuilt behind the caches
	}
	s.lastIndex = index
	var cmd storepb.Command
	if err := proto.Unmarshal(data, &cmd); err != nil || cmd.Version != CommandVersion || cmd.Op == nil {
		return &Result{Err: ErrInvalidCommand}, nil
	}
	t := &txn{s: s, r: b, b: b}
	sm := &storepb.ShardMeta{}
	found, err := t.get(keys.ShardMeta(s.shard), sm)
	if err != nil {
		return nil, err
	}
	t.sm = sm
	t.now = applyTime(sm.LastTimeMs, sm.LastStampMs, cmd.TimeMs)
	t.smDirty = t.now != sm.LastTimeMs || cmd.TimeMs != sm.LastStampMs || !found
	// A new shard keeps the due index from its first command.
	sm.DueIndex = sm.DueIndex || !found
	sm.LastTimeMs, sm.LastStampMs = t.now, cmd.TimeMs

	res := &Result{}
	switch op := cmd.Op.(type) {
	case *storepb.Command_CreateQueue:
		err = t.createQueue(op.CreateQueue, res)
	case *storepb.Command_UpdateQueue:
		err = t.updateQueue(op.UpdateQueue, res)
	case *storepb.Command_DeleteQueue:
		err = t.deleteQueue(op.DeleteQueue, res)
	case *storepb.Command_PurgeQueue:
		err = t.purgeQueue(op.PurgeQueue, res)
	case *storepb.Command_Send:
		err = t.send(op.Send, res)
	case *storepb.Command_Receive:
		err = t.receive(op.Receive, res)
	case *storepb.Command_Delete:
		err = t.deleteMessages(op.Delete, res)
	case *storepb.Command_ChangeVisibility:
		err = t.changeVisibility(op.ChangeVisibility, res)
	case *storepb.Command_Tick:
		err = t.tick(op.Tick, res)
	case *storepb.Command_DeliverOutbox:
		err = t.deliverOutbox(op.DeliverOutbox, res)
	case *storepb.Command_AckOutbox:
		err = t.ackOutbox(op.AckOutbox, res)
	case *storepb.Command_Redrive:
		err = t.redrive(op.Redrive, res)
	case *storepb.Command_SetTenantQuota:
		err = t.setTenantQuota(op.SetTenantQuota, res)
	case *storepb.Command_CancelMessage:
		err = t.cancelMessage(op.CancelMessage, res)
	case *storepb.Command_RescheduleMessage:
		err = t.rescheduleMessage(op.RescheduleMessage, res)
	case *storepb.Command_PutAccessKey:
		err = t.putAccessKey(op.PutAccessKey, res)
	case *storepb.Command_RevokeAccessKey:
		err = t.revokeAccessKey(op.RevokeAccessKey, res)
	case *storepb.Command_Nack:
		err = t.nack(op.Nack, res)
	case *storepb.Command_BootstrapMembership:
		err = t.bootstrapMembership(op.BootstrapMembership, res)
	case *storepb.Command_RegisterNode:
		err = t.registerNode(op.RegisterNode, res)
	case *storepb.Command_AdmitNode:
		err = t.admitNode(op.AdmitNode, res)
	case *storepb.Command_SetNodeState:
		err = t.setNodeState(op.SetNodeState, res)
	case *storepb.Command_SetReplicaSet:
		err = t.setReplicaSet(op.SetReplicaSet, res)
	case *storepb.Command_AddShards:
		err = t.addShards(op.AddShards, res)
	default:
		var handled bool
		if handled, err = t.applyTopic(cmd.Op, res); !handled {
			res.Err = ErrInvalidCommand
		}
	}
	if err == nil && t.smDirty {
		err = t.set(keys.ShardMeta(s.shard), sm)
	}
	if err == nil {
		err = t.flushTenants()
	}
	if err == nil {
		err = t.flushMarks()
	}
	if err == nil {
		err = t.flushMetas()
	}
	if err == nil {
		err = t.flushOrders()
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// Clock bounds (see DESIGN.md, "Time"). Replicas apply the same rule to
// the same stamps, so the result is deterministic.
const (
	// MaxClockJumpMs bounds how far one command moves apply time forward:
	// a single wildly-ahead stamp (a clock set years ahead) must not expire
	// every message at once. After an idle gap longer than this, time
	// catches up by this much per command.
	MaxClockJumpMs = 24 * 60 * 60 * 1000
	// maxBehindStepMs caps the proposer's elapsed time that counts while
	// its stamps are behind apply time (interleaved proposers' stamps must
	// not push time ahead by their clocks' difference).
	maxBehindStepMs = 10_000
)

// applyTime returns a command's apply time from the last applied time, the
// previous command's stamp and this command's stamp. Time never runs
// backwards. A stamp ahead moves time to it, at most MaxClockJumpMs per
// command. A stamp behind (a new leader whose clock lags the old one's)
// does not freeze time until its clock catches up: time advances by half
// the proposer's elapsed time since the previous stamp (capped at
// maxBehindStepMs), so durations keep running and the lead is absorbed
// within twice its size.
func applyTime(last, lastStamp, stamp int64) int64 {
	if last == 0 {
		return max(stamp, 0) // the shard's first command
	}
	if stamp >= last {
		return min(stamp, last+MaxClockJumpMs)
	}
	step := min(stamp-lastStamp, maxBehindStepMs)
	if step <= 0 || lastStamp == 0 {
		return last
	}
	// Half, rounded up: a proposer stamping every millisecond still moves
	// time.
	return last + (step+1)/2
}

// txn is one command's (or one read's) view: r serves reads, b takes writes
// (nil for reads outside Apply).
type txn struct {
	s       *Store
	r       pebble.Reader
	b       *pebble.Batch
	now     int64
	sm      *storepb.ShardMeta
	smDirty bool
	// gen is a read-only view's generation of the hot-key cache (viewHot).
	gen uint64

	tenants      map[string]*storepb.TenantRecord // loaded by this command
	dirtyTenants map[string]bool                  // to write back at its end

	marks      map[string]position // index low-water marks loaded (by mark key)
	marksDirty map[string]bool     // to write back at the command's end

	metas      map[uint64]*storepb.QueueMeta // queue metas loaded (by queue id)
	metasDirty map[uint64]bool               // to write back at the command's end
	lowStale   map[uint64]bool               // queues whose low_seq moves at the command's end

	sig *signer // receipt handle MACs under the last queue's key
	kb  []byte  // key buffer (see keyMessage)

	// leases: the messages of this command known to have a lease record
	// (pointer keys, lookups only).
	leases map[*storepb.MessageRecord]struct{}

	// overflowDrops counts the messages this command removed to make room
	// in a full queue (bounded by maxOverflowDrops).
	overflowDrops int
	orders        map[uint64]*storepb.QueueOrder // receive-order records loaded (by queue id)
	ordersDirty   map[uint64]bool                // to write back at the command's end
	groups        map[groupKey]*groupEntry       // fair queues' group states loaded

	// unblocked: a FIFO group's new head is visible at now (its earlier
	// message went), so a waiting long poll has something to receive.
	unblocked bool
}

func (s *Store) reader(now int64) *txn {
	g := s.views.gen.Load()
	return &txn{s: s, r: s.db, now: now, gen: s.views.begin(g)}
}

// snapshot is a reader over one point-in-time view of the db. A read that
// walks an index and then reads records (Peek, stats, NeedsTick, Depths)
// must use one: iterators are point-in-time but a Get on the live db sees
// later applies, so an index entry could point to a message deleted since
// ("index entry without message"). The caller calls done when finished.
func (s *Store) snapshot(now int64) (t *txn, done func()) {
	g := s.views.gen.Load()
	snap := s.db.NewSnapshot()
	return &txn{s: s, r: snap, now: now, gen: s.views.begin(g)}, func() { _ = snap.Close() }
}

// marshal is deterministic (sorted map keys): replicas must write identical
// bytes.
var marshal = proto.MarshalOptions{Deterministic: true}

// get reads key into m and reports whether it exists.
func (t *txn) get(key []byte, m proto.Message) (bool, error) {
	t.s.keysRead.Add(1)
	if v, found, answered, err := t.getHot(key); answered {
		if err != nil {
			return false, fmt.Errorf("store: get %s: %w", keys.Pretty(key), err)
		}
		if found && m != nil {
			if err := proto.Unmarshal(v, m); err != nil {
				return false, fmt.Errorf("store: decode %s: %w", keys.Pretty(key), err)
			}
		}
		return found, nil
	}
	v, closer, err := t.r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: get %s: %w", keys.Pretty(key), err)
	}
	defer closer.Close()
	if m != nil {
		if err := proto.Unmarshal(v, m); err != nil {
			return false, fmt.Errorf("store: decode %s: %w", keys.Pretty(key), err)
		}
	}
	return true, nil
}

func (t *txn) set(key []byte, m proto.Message) error {
	v, err := marshal.MarshalAppend(t.s.valBuf[:0], m)
	if err != nil {
		return fmt.Errorf("store: encode %s: %w", keys.Pretty(key), err)
	}
	t.s.valBuf = v
	return t.setRaw(key, v)
}

func (t *txn) setRaw(key, v []byte) error {
	if err := t.b.Set(key, v, nil); err != nil {
		return fmt.Errorf("store: set %s: %w", keys.Pretty(key), err)
	}
	t.wroteHot(key, v, true)
	return nil
}

func (t *txn) del(key []byte) error {
	if err := t.b.Delete(key, nil); err != nil {
		return fmt.Errorf("store: delete %s: %w", keys.Pretty(key), err)
	}
	t.wroteHot(key, nil, false)
	return nil
}

// delOnce deletes key, with Pebble's SingleDelete when once: the caller
// knows the key exists and was set exactly once since its last deletion
// (DESIGN.md, "Single deletes"). A flush or compaction where the single
// delete meets its set drops both, where a Delete must be kept down to the
// last level.
func (t *txn) delOnce(key []byte, once bool) error {
	if !once {
		return t.del(key)
	}
	if err := t.b.SingleDelete(key, nil); err != nil {
		return fmt.Errorf("store: single delete %s: %w", keys.Pretty(key), err)
	}
	t.wroteHot(key, nil, false)
	return nil
}

// setOnce reports whether message seq of queue qid has had every key
// written under the set-once rule: its seq is at or past the queue's
// set_once_seq (replicated in its meta, so every replica answers alike).
func (t *txn) setOnce(qid, seq uint64) (bool, error) {
	if t.s.plainDeletes {
		return false, nil
	}
	meta, err := t.queueMeta(qid)
	if err != nil {
		return false, err
	}
	return meta.SetOnceSeq != 0 && seq >= meta.SetOnceSeq, nil
}

func (t *txn) delRange(lo, hi []byte) error {
	if err := t.b.DeleteRange(lo, hi, nil); err != nil {
		return fmt.Errorf("store: delete range %s: %w", keys.Pretty(lo), err)
	}
	t.s.dropHot()
	return nil
}

// iter is a bounded iterator that counts every position it lands on.
type iter struct {
	it     *pebble.Iterator
	n      *atomic.Uint64
	points *atomic.Uint64
}

func (t *txn) iter(lo, hi []byte) (*iter, error) {
	it, err := t.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("store: iterate %s: %w", keys.Pretty(lo), err)
	}
	return &iter{it: it, n: &t.s.keysRead, points: &t.s.pointsRead}, nil
}

func (i *iter) count(ok bool) bool {
	if ok {
		i.n.Add(1)
	}
	return ok
}

func (i *iter) First() bool            { return i.count(i.it.First()) }
func (i *iter) Next() bool             { return i.count(i.it.Next()) }
func (i *iter) SeekGE(k []byte) bool   { return i.count(i.it.SeekGE(k)) }
func (i *iter) Key() []byte            { return i.it.Key() }
func (i *iter) Value() ([]byte, error) { return i.it.ValueAndErr() }

// Close closes the iterator and reports any error it met.
func (i *iter) Close() error {
	i.points.Add(i.it.Stats().InternalStats.PointCount)
	if err := i.it.Close(); err != nil {
		return fmt.Errorf("store: iterator: %w", err)
	}
	return nil
}

// closeInto closes it and keeps the first error in *err.
func closeInto(it *iter, err *error) {
	if cerr := it.Close(); *err == nil {
		*err = cerr
	}
}
