package store

import (
	"bytes"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// dedupReader answers a Send command's idempotency-key and deduplication-id
// lookups of one queue (every SDK send carries a key, which is almost never
// there). It reads them through one iterator, opened at the first lookup,
// with bloom filters on every level: a Get builds a new iterator stack over
// every memtable and level for each key and skips L6's filters, so each
// miss read a data block of every L6 table overlapping the key (on a
// node's profile those Gets were a quarter of its CPU). A command carries
// up to 256 merged sends, so the iterator's set-up is shared too. It sees
// the batch as of its opening; the records this command writes after that
// are kept in wrote, so every lookup answers exactly what a Get would.
type dedupReader struct {
	t     *txn
	qid   uint64
	it    *pebble.Iterator
	key   []byte
	wrote map[string]*storepb.DedupRecord
	// idemIt reads the bucketed idempotency records (idem.go).
	idemIt *pebble.Iterator
}

func (t *txn) newDedupReader(qid uint64) *dedupReader {
	return &dedupReader{t: t, qid: qid}
}

// recall is txn.recall for key.
func (d *dedupReader) recall(key string, rec *storepb.DedupRecord) (found, live bool, err error) {
	if w, ok := d.wrote[key]; ok {
		proto.Merge(rec, w)
		return true, w.ExpiresAtMs > d.t.now, nil
	}
	if may, err := d.t.dedupMayHold(d.qid, key); !may || err != nil {
		return false, false, err
	}
	return d.seek(key, rec)
}

// seek reads key's 'd' record into rec from Pebble (through the batch).
func (d *dedupReader) seek(key string, rec *storepb.DedupRecord) (found, live bool, err error) {
	t := d.t
	if d.it == nil {
		lo := keys.DedupPrefix(t.s.shard, d.qid)
		d.it, err = t.r.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: keys.PrefixEnd(lo), UseL6Filters: true})
		if err != nil {
			return false, false, fmt.Errorf("store: iterate %s: %w", keys.Pretty(lo), err)
		}
	}
	t.s.keysRead.Add(1)
	d.key = keys.AppendString(append(d.key[:0], keys.DedupPrefix(t.s.shard, d.qid)...), key)
	if !d.it.SeekPrefixGE(d.key) || !bytes.Equal(d.it.Key(), d.key) {
		if err := d.it.Error(); err != nil {
			return false, false, fmt.Errorf("store: get %s: %w", keys.Pretty(d.key), err)
		}
		return false, false, nil
	}
	v, err := d.it.ValueAndErr()
	if err == nil {
		err = proto.Unmarshal(v, rec)
	}
	if err != nil {
		return false, false, fmt.Errorf("store: decode %s: %w", keys.Pretty(d.key), err)
	}
	return true, rec.ExpiresAtMs > t.now, nil
}

// remember is txn.remember; later lookups of key in this command see rec.
func (d *dedupReader) remember(q *storepb.QueueRecord, key string, rec *storepb.DedupRecord, old expiring) error {
	if d.wrote == nil {
		d.wrote = map[string]*storepb.DedupRecord{}
	}
	d.wrote[key] = rec
	return d.t.remember(q, key, rec, old)
}

// close closes the iterators that were opened.
func (d *dedupReader) close() error {
	for _, it := range []*pebble.Iterator{d.it, d.idemIt} {
		if it == nil {
			continue
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("store: iterator: %w", err)
		}
	}
	return nil
}
