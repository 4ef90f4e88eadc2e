package store

import (
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// PartitionCopies reads up to limit catalog entries of this shard (every
// tenant) in catalog order, starting after the queue `after` (zero: from
// the first), and returns the partition copies among them and the last
// entry read (zero when the catalog ended). The server's reconciler walks
// them in pages to bring each copy in line with its record of truth.
// Records are returned without their handle keys.
func (s *Store) PartitionCopies(after QueueRef, limit int) (_ []*storepb.QueueRecord, last QueueRef, err error) {
	t := s.reader(0)
	p := keys.CatalogPrefix(s.shard)
	lo := p
	if after != (QueueRef{}) {
		lo = append(keys.Catalog(s.shard, after.Tenant, after.Name), 0)
	}
	it, err := t.iter(lo, keys.PrefixEnd(p))
	if err != nil {
		return nil, QueueRef{}, err
	}
	defer closeInto(it, &err)
	var out []*storepb.QueueRecord
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		if n == limit {
			return out, last, nil
		}
		n++
		v, err := it.Value()
		if err != nil {
			return nil, QueueRef{}, err
		}
		rec := &storepb.QueueRecord{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return nil, QueueRef{}, err
		}
		last = QueueRef{Tenant: rec.Tenant, Name: rec.Name}
		if rec.PartitionCopy {
			out = append(out, publicRecord(rec))
		}
	}
	return out, QueueRef{}, nil
}
