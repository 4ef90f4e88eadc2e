package store

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeHandle: arbitrary bytes never panic the decoder and never verify
// without the right key; every handle EncodeHandle makes decodes to itself,
// and flipping any byte of it makes it invalid.
func FuzzDecodeHandle(f *testing.F) {
	key := bytes.Repeat([]byte{7}, 32)
	f.Add(EncodeHandle(Handle{Shard: 0, Queue: 1, Seq: 1, ReceiveCount: 1}, key), uint64(1), uint64(2), int32(3))
	f.Add([]byte{}, uint64(0), uint64(0), int32(0))
	f.Add([]byte{1, 2, 3}, uint64(9), uint64(1<<40), int32(1000))
	f.Fuzz(func(t *testing.T, raw []byte, queue, seq uint64, count int32) {
		if h, err := DecodeHandle(raw, key); err == nil {
			// Only a handle we signed verifies: re-encoding gives the same bytes.
			if !bytes.Equal(EncodeHandle(h, key), raw) {
				t.Fatalf("%x verified but does not re-encode to itself", raw)
			}
		} else if !errors.Is(err, ErrInvalidReceipt) {
			t.Fatalf("decode error %v is not ErrInvalidReceipt", err)
		}
		_, _ = ParseHandle(raw)

		h := Handle{Shard: 3, Queue: queue, Seq: seq, ReceiveCount: count}
		enc := EncodeHandle(h, key)
		got, err := DecodeHandle(enc, key)
		if err != nil || got != h {
			t.Fatalf("round trip of %+v: %+v, %v", h, got, err)
		}
		if _, err := DecodeHandle(enc, bytes.Repeat([]byte{8}, 32)); err == nil {
			t.Fatal("handle verified with another queue's key")
		}
		for i := range enc {
			bad := bytes.Clone(enc)
			bad[i] ^= 0x01
			if _, err := DecodeHandle(bad, key); err == nil {
				t.Fatalf("handle with byte %d flipped verified", i)
			}
		}
	})
}
