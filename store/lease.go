package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// A message is stored in two parts (see DESIGN.md, "Lease state"):
//
//   - the message record ('m' seq, a MessageRecord) is written once, at
//     insert, with the lease fields as they were then (visible_at, receive
//     count 0 or the count a dead-letter move carried);
//   - the lease record ('s' seq, leaseLen bytes) holds visible_at, the
//     receive count and the first receive time once they changed: the first
//     receive, visibility change or reschedule writes it, later ones
//     overwrite it, remove deletes it. A message without one has its lease
//     fields in its record (also every message stored before the split).
//
// The visibility and tag index entries of a message with a lease record
// carry the count and first receive time after the flag byte
// (indexLeaseLen), so a receive that walks an index reads the record only
// for the body and never the lease record.
//
// A message with failed or released deliveries (retry.go) has both longer
// by those two counts (leaseCountsLen, indexCountsLen); one without keeps
// the short forms, so a queue that never nacks writes what it wrote before.

const (
	// visible_at, receive_count, first_received_at, size, flags (leasePlain
	// bit; high nibble: priority + 1, 0 for the default)
	leaseLen      = 8 + 4 + 8 + 8 + 1
	indexLeaseLen = 1 + 4 + 8 // flag, receive_count, first_received_at
	// leasePlain: the message has no tags, no group and no ttl, so what
	// removing or moving it needs besides its lease is its size: a delete
	// or visibility change by receipt handle reads the lease record alone.
	leasePlain byte = 1
	// leaseClosed: MessageRecord.lease_closed.
	leaseClosed byte = 2
	// leaseTagged: the message's tags follow the long form (which a tagged
	// record always uses), each a 2-byte length and its bytes, so that a
	// tagged message without group and ttl is plain too: its delete finds
	// its tag index entries without reading the 1 KiB record.
	leaseTagged byte = 4
	// The long forms: failed_count and released_count follow.
	leaseCountsLen = leaseLen + 4 + 4
	indexCountsLen = indexLeaseLen + 4 + 4
)

// hasCounts reports whether m needs the long lease and index forms.
func hasCounts(m *storepb.MessageRecord) bool { return m.FailedCount != 0 || m.ReleasedCount != 0 }

// Keys of the per-message writes and reads, built in the command's key
// buffer: each is valid until the next one is built, so it must go
// straight into a batch operation or a Get (both copy or drop it).
func (t *txn) keyBuf() []byte {
	if t.kb == nil {
		t.kb = make([]byte, 0, 64) // one allocation holds any fixed-width key
	}
	return t.kb[:0]
}

func (t *txn) keyLease(qid, seq uint64) []byte {
	t.kb = keys.AppendLease(t.keyBuf(), t.s.shard, qid, seq)
	return t.kb
}

func (t *txn) keyMessage(qid, seq uint64) []byte {
	t.kb = keys.AppendMessage(t.keyBuf(), t.s.shard, qid, seq)
	return t.kb
}

func (t *txn) keyVisible(qid uint64, at int64, seq uint64) []byte {
	t.kb = keys.AppendVisible(t.keyBuf(), t.s.shard, qid, at, seq)
	return t.kb
}

func (t *txn) keyFair(qid uint64, group string, at int64, seq uint64) []byte {
	t.kb = keys.AppendFair(t.keyBuf(), t.s.shard, qid, group, at, seq)
	return t.kb
}

func (t *txn) keyTag(qid uint64, tag string, at int64, seq uint64) []byte {
	t.kb = keys.AppendTag(t.keyBuf(), t.s.shard, qid, tag, at, seq)
	return t.kb
}

// leased reports whether m (read or written by this command) has a lease
// record.
func (t *txn) leased(m *storepb.MessageRecord) bool {
	_, ok := t.leases[m]
	return ok
}

func (t *txn) markLeased(m *storepb.MessageRecord) {
	if t.leases == nil {
		t.leases = map[*storepb.MessageRecord]struct{}{}
	}
	t.leases[m] = struct{}{}
}

// putLease writes m's lease record.
func (t *txn) putLease(qid uint64, m *storepb.MessageRecord) error {
	var v [leaseCountsLen]byte
	binary.BigEndian.PutUint64(v[0:], uint64(m.VisibleAtMs))
	binary.BigEndian.PutUint32(v[8:], uint32(m.ReceiveCount))
	binary.BigEndian.PutUint64(v[12:], uint64(m.FirstReceivedAtMs))
	binary.BigEndian.PutUint64(v[20:], uint64(m.Size))
	v[28] = leasePriority(m)
	plain := m.GroupId == "" && m.ExpiresAtMs == 0 && tagsFit(m.Tags)
	tagged := plain && len(m.Tags) > 0
	if plain {
		v[28] |= leasePlain
	}
	if tagged {
		v[28] |= leaseTagged
	}
	if m.LeaseClosed {
		v[28] |= leaseClosed
	}
	n := leaseLen
	if hasCounts(m) || tagged {
		binary.BigEndian.PutUint32(v[29:], uint32(m.FailedCount))
		binary.BigEndian.PutUint32(v[33:], uint32(m.ReleasedCount))
		n = leaseCountsLen
	}
	if t.leased(m) && !t.s.overwriteLeases {
		// A rewrite: under the set-once rule the record set before goes
		// first, by a single delete, so that every set meets one
		// (DESIGN.md, "Single deletes"). Older messages are overwritten
		// in place, as before.
		once, err := t.setOnce(qid, m.Seq)
		if err != nil {
			return err
		}
		if once {
			if err := t.delOnce(t.keyLease(qid, m.Seq), true); err != nil {
				return err
			}
		}
	}
	t.markLeased(m)
	if !tagged {
		return t.setRaw(t.keyLease(qid, m.Seq), v[:n])
	}
	b := append(t.s.leaseBuf[:0], v[:n]...)
	for _, tag := range m.Tags {
		b = binary.BigEndian.AppendUint16(b, uint16(len(tag)))
		b = append(b, tag...)
	}
	t.s.leaseBuf = b
	return t.setRaw(t.keyLease(qid, m.Seq), b)
}

// maxLeaseTagBytes bounds the tags a lease record carries (the server
// allows 16 short ones); a message with more keeps them in its record only.
const maxLeaseTagBytes = 4096

// tagsFit reports whether tags go into a lease record.
func tagsFit(tags []string) bool {
	n := 0
	for _, tag := range tags {
		n += 2 + len(tag)
	}
	return n <= maxLeaseTagBytes
}

// leaseTags decodes the tags of a tagged lease record (nil for others).
func leaseTags(v []byte) ([]string, error) {
	if len(v) < leaseLen || v[28]&leaseTagged == 0 {
		return nil, nil
	}
	if len(v) < leaseCountsLen {
		return nil, fmt.Errorf("store: tagged lease record: %d bytes", len(v))
	}
	var tags []string
	for b := v[leaseCountsLen:]; len(b) > 0; {
		if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
			return nil, fmt.Errorf("store: lease record tags: %d bytes left", len(b))
		}
		n := 2 + int(binary.BigEndian.Uint16(b))
		tags = append(tags, string(b[2:n]))
		b = b[n:]
	}
	return tags, nil
}

// applyLease overlays a lease record on m.
func applyLease(m *storepb.MessageRecord, v []byte) error {
	if len(v) != leaseLen && len(v) != leaseCountsLen && (len(v) < leaseCountsLen || v[28]&leaseTagged == 0) {
		return fmt.Errorf("store: lease record of seq %d: %d bytes", m.Seq, len(v))
	}
	m.VisibleAtMs = int64(binary.BigEndian.Uint64(v[0:]))
	m.ReceiveCount = int32(binary.BigEndian.Uint32(v[8:]))
	m.FirstReceivedAtMs = int64(binary.BigEndian.Uint64(v[12:]))
	m.LeaseClosed = v[28]&leaseClosed != 0
	m.FailedCount, m.ReleasedCount = 0, 0
	if len(v) >= leaseCountsLen {
		m.FailedCount = int32(binary.BigEndian.Uint32(v[29:]))
		m.ReleasedCount = int32(binary.BigEndian.Uint32(v[33:]))
	}
	return nil
}

// leaseOnly reads message seq for a change by receipt handle (delete,
// visibility change). A plain message with a lease record (every message
// received since the split that has no group and no ttl, and since tagged
// lease records no tags or tags carried by the lease record) comes from its
// lease record alone: seq, size, priority, tags and lease fields, which is
// all that removing or moving it reads. Anything else is read whole. nil:
// no such message.
func (t *txn) leaseOnly(q *storepb.QueueRecord, seq uint64) (*storepb.MessageRecord, error) {
	qid := q.Id
	key := t.keyLease(qid, seq)
	t.s.keysRead.Add(1)
	v, closer, err := t.r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return t.record(qid, seq) // never leased, or the old layout
	}
	if err != nil {
		return nil, fmt.Errorf("store: get %s: %w", keys.Pretty(key), err)
	}
	defer closer.Close()
	var m *storepb.MessageRecord
	if len(v) >= leaseLen && v[28]&leasePlain != 0 && !isFifo(q) {
		m = &storepb.MessageRecord{Seq: seq, Size: int64(binary.BigEndian.Uint64(v[20:])), Priority: priorityFromLease(v[28])}
		if m.Tags, err = leaseTags(v); err != nil {
			return nil, err
		}
	} else if m, err = t.record(qid, seq); m == nil || err != nil {
		if err == nil {
			err = fmt.Errorf("store: lease record without message: queue %d seq %d", qid, seq)
		}
		return nil, err
	}
	if err := applyLease(m, v); err != nil {
		return nil, err
	}
	t.markLeased(m)
	return m, nil
}

// indexValue is the value of m's visibility and tag entries: the flag, and
// with a lease record the count and first receive time.
func (t *txn) indexValue(m *storepb.MessageRecord) []byte {
	v := append(t.s.idxBuf[:0], entryFlag(m))
	if t.leased(m) {
		v = binary.BigEndian.AppendUint32(v, uint32(m.ReceiveCount))
		v = binary.BigEndian.AppendUint64(v, uint64(m.FirstReceivedAtMs))
		if hasCounts(m) {
			v = binary.BigEndian.AppendUint32(v, uint32(m.FailedCount))
			v = binary.BigEndian.AppendUint32(v, uint32(m.ReleasedCount))
		}
	}
	t.s.idxBuf = v
	return v
}

// leaseFromIndex overlays the lease an index entry at visibleAt carries on
// m; leased reports that the entry carried one (m has a lease record). An
// entry with the flag alone leaves m's own fields.
func leaseFromIndex(m *storepb.MessageRecord, visibleAt int64, v []byte) (leased bool, err error) {
	switch len(v) {
	case 0, 1:
		return false, nil
	case indexLeaseLen, indexCountsLen:
		m.VisibleAtMs = visibleAt
		m.ReceiveCount = int32(binary.BigEndian.Uint32(v[1:]))
		m.FirstReceivedAtMs = int64(binary.BigEndian.Uint64(v[5:]))
		m.LeaseClosed = v[0] == flagWaiting
		m.FailedCount, m.ReleasedCount = 0, 0
		if len(v) == indexCountsLen {
			m.FailedCount = int32(binary.BigEndian.Uint32(v[13:]))
			m.ReleasedCount = int32(binary.BigEndian.Uint32(v[17:]))
		}
		return true, nil
	}
	return false, fmt.Errorf("store: index entry of seq %d: %d bytes", m.Seq, len(v))
}

// record reads message seq's record alone (lease fields as stored at
// insert); nil if there is none.
func (t *txn) record(qid, seq uint64) (*storepb.MessageRecord, error) {
	m := &storepb.MessageRecord{}
	ok, err := t.get(t.keyMessage(qid, seq), m)
	if !ok || err != nil {
		return nil, err
	}
	return m, nil
}

// recordIter reads one queue's message records through one iterator: a
// receive reads its candidates' records in rising seq order (mostly), and
// consecutive seeks step through the same blocks where a point lookup each
// would set up every level again. It sees the batch as of its first read.
type recordIter struct {
	t      *txn
	qid    uint64
	it     *iter
	key    []byte
	prefix int    // bytes of key before the seq
	head   []byte // decodeLean's scratch
}

func (r *recordIter) get(seq uint64) (*storepb.MessageRecord, error) {
	if r.it == nil {
		p := keys.MessagePrefix(r.t.s.shard, r.qid)
		it, err := r.t.iter(p, keys.PrefixEnd(p))
		if err != nil {
			return nil, err
		}
		r.it, r.key, r.prefix = it, p, len(p)
	}
	r.key = keys.AppendUint64(r.key[:r.prefix], seq)
	if !r.it.SeekGE(r.key) || !bytes.Equal(r.it.Key(), r.key) {
		return nil, nil
	}
	v, err := r.it.Value()
	if err != nil {
		return nil, err
	}
	// Without the body and attributes: see decodeLean.
	m := &storepb.MessageRecord{}
	if r.head, err = decodeLean(v, m, r.head); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", keys.Pretty(r.key), err)
	}
	return m, nil
}

func (r *recordIter) close(err *error) {
	if r.it != nil {
		closeInto(r.it, err)
	}
}

// message reads message seq with its current lease state; nil if there is
// none.
func (t *txn) message(qid, seq uint64) (*storepb.MessageRecord, error) {
	m, err := t.record(qid, seq)
	if m == nil || err != nil {
		return nil, err
	}
	return m, t.loadLease(qid, m)
}

// loadLease overlays m's lease record, if it has one.
func (t *txn) loadLease(qid uint64, m *storepb.MessageRecord) error {
	key := t.keyLease(qid, m.Seq)
	t.s.keysRead.Add(1)
	v, closer, err := t.r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: get %s: %w", keys.Pretty(key), err)
	}
	defer closer.Close()
	if err := applyLease(m, v); err != nil {
		return err
	}
	if t.b != nil {
		t.markLeased(m)
	}
	return nil
}

// decodeMessage decodes a message record read by a walk over 'm' and
// overlays its lease record.
func (t *txn) decodeMessage(qid uint64, key, v []byte) (*storepb.MessageRecord, error) {
	m := &storepb.MessageRecord{}
	if err := proto.Unmarshal(v, m); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", keys.Pretty(key), err)
	}
	return m, t.loadLease(qid, m)
}
