package store

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"hash"
	"strings"
)

// Handle is what a receipt handle names: one receive of one message.
// A handle needs no index: the message key is (Shard, Queue, Seq), and a
// ReceiveCount that no longer matches the record makes the handle stale.
// Partition tells the router which partition's catalog name to address.
type Handle struct {
	Shard     uint64
	Partition uint16
	Queue     uint64
	Seq       uint64
	// ReceiveCount is the receive this handle was issued for.
	ReceiveCount int32
}

const (
	// handleV1 (no partition) is still accepted, as partition 0: handles
	// issued before queues had partitions stay valid across an upgrade.
	handleV1     = 1
	handleV1Body = 1 + 8 + 8 + 8 + 4
	handleV2     = 2
	handleBody   = 1 + 8 + 2 + 8 + 8 + 4
	handleMACLen = 16
	// HandleLen is the length of an encoded receipt handle.
	HandleLen = handleBody + handleMACLen
)

// EncodeHandle returns the opaque receipt handle bytes: version, shard,
// partition, queue, seq, receive count, and an HMAC-SHA256 of those
// (truncated to 16 bytes) under the queue's handle key, so a client cannot
// forge a handle for another message or receive.
func EncodeHandle(h Handle, key []byte) []byte { return newSigner(key).encode(h) }

func (s *signer) encode(h Handle) []byte {
	b := make([]byte, 0, HandleLen)
	b = append(b, handleV2)
	b = binary.BigEndian.AppendUint64(b, h.Shard)
	b = binary.BigEndian.AppendUint16(b, h.Partition)
	b = binary.BigEndian.AppendUint64(b, h.Queue)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	b = binary.BigEndian.AppendUint32(b, uint32(h.ReceiveCount))
	return append(b, s.mac(b)...)
}

// ParseHandle decodes a handle without checking its MAC (for routing by
// shard and partition). Any malformed input gives ErrInvalidReceipt.
func ParseHandle(b []byte) (Handle, error) {
	switch {
	case len(b) == handleV1Body+handleMACLen && b[0] == handleV1:
		return Handle{
			Shard:        binary.BigEndian.Uint64(b[1:]),
			Queue:        binary.BigEndian.Uint64(b[9:]),
			Seq:          binary.BigEndian.Uint64(b[17:]),
			ReceiveCount: int32(binary.BigEndian.Uint32(b[25:])),
		}, nil
	case len(b) == HandleLen && b[0] == handleV2:
		h := Handle{
			Shard:        binary.BigEndian.Uint64(b[1:]),
			Partition:    binary.BigEndian.Uint16(b[9:]),
			Queue:        binary.BigEndian.Uint64(b[11:]),
			Seq:          binary.BigEndian.Uint64(b[19:]),
			ReceiveCount: int32(binary.BigEndian.Uint32(b[27:])),
		}
		if h.Partition >= MaxPartitions {
			return Handle{}, ErrInvalidReceipt
		}
		return h, nil
	}
	return Handle{}, ErrInvalidReceipt
}

// DecodeHandle decodes a handle and verifies its MAC under key.
func DecodeHandle(b, key []byte) (Handle, error) { return newSigner(key).decode(b) }

func (s *signer) decode(b []byte) (Handle, error) {
	h, err := ParseHandle(b)
	if err != nil {
		return Handle{}, err
	}
	body := len(b) - handleMACLen
	if !hmac.Equal(b[body:], s.mac(b[:body])) {
		return Handle{}, ErrInvalidReceipt
	}
	return h, nil
}

// signer computes handle MACs under one key, reusing its HMAC state: a
// receive or delete of n messages sets the HMAC up once, not n times.
type signer struct {
	key []byte
	h   hash.Hash
	sum [sha256.Size]byte
}

func newSigner(key []byte) *signer { return &signer{key: key, h: hmac.New(sha256.New, key)} }

func (s *signer) mac(body []byte) []byte {
	s.h.Reset()
	s.h.Write(body)
	return s.h.Sum(s.sum[:0])[:handleMACLen]
}

// signer returns a signer for key, the same one for the whole command.
func (t *txn) signer(key []byte) *signer {
	if t.sig == nil || !bytes.Equal(t.sig.key, key) {
		t.sig = newSigner(key)
	}
	return t.sig
}

var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// messageID is unique (shard, queue id and seq identify the message; a seq
// is never reused in a queue, and queue ids are never reused in a shard) and
// sorts by send time because base32hex preserves byte order. It is derived
// from replicated state only, so every replica computes the same id.
func messageID(nowMs int64, shard, queue, seq uint64) string {
	b := make([]byte, 0, 32)
	b = binary.BigEndian.AppendUint64(b, uint64(max(nowMs, 0)))
	b = binary.BigEndian.AppendUint64(b, shard)
	b = binary.BigEndian.AppendUint64(b, queue)
	b = binary.BigEndian.AppendUint64(b, seq)
	return strings.ToLower(idEncoding.EncodeToString(b))
}
