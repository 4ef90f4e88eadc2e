package store

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/internal/keys"
)

// readAll decodes every record under prefix p in key order: the catalog,
// membership and topic-partition walks that read a whole (small) kind.
func readAll[T proto.Message](t *txn, p []byte, newT func() T) (out []T, err error) {
	it, err := t.iter(p, keys.PrefixEnd(p))
	if err != nil {
		return nil, err
	}
	defer closeInto(it, &err)
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			return nil, err
		}
		rec := newT()
		if err := proto.Unmarshal(v, rec); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", keys.Pretty(it.Key()), err)
		}
		out = append(out, rec)
	}
	return out, nil
}
