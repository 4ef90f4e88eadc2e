package store

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// A receive reads the record of every message it leases, on every replica,
// but only the leader's reply carries the body and the attributes: the
// others need the record's small fields (size, tags, group, counts) for
// their decisions and the lease they write. So the receive's scan decodes
// a record without those two fields and keeps them encoded, as the
// record's unknown fields, until the reply is built (Received.Whole).
// Decoding the attribute map (by reflection) and checking the body's UTF-8
// were three quarters of a record read in a closed-loop profile.
//
// A record so decoded marshals whole (unknown fields are written back as
// they are), so a copy of it that is stored or sent (a dead-letter move)
// loses nothing; code that reads Body or Attributes calls whole first.
const (
	recordBodyField       = 3 // MessageRecord.body
	recordAttributesField = 4 // MessageRecord.attributes
)

// decodeLean decodes v into m but for its body and attributes, which it
// leaves encoded in m's unknown fields; head is scratch space, returned
// for reuse.
func decodeLean(v []byte, m *storepb.MessageRecord, head []byte) ([]byte, error) {
	head = head[:0]
	var rest []byte
	for b := v; len(b) > 0; {
		n, field, err := nextField(b)
		if err != nil {
			return head, err
		}
		if field == recordBodyField || field == recordAttributesField {
			rest = append(rest, b[:n]...)
		} else {
			head = append(head, b[:n]...)
		}
		b = b[n:]
	}
	if err := proto.Unmarshal(head, m); err != nil {
		return head, err
	}
	m.ProtoReflect().SetUnknown(rest)
	return head, nil
}

// nextField returns the length of b's first field and its number.
func nextField(b []byte) (int, protowire.Number, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, protowire.ParseError(n)
	}
	k := protowire.ConsumeFieldValue(num, typ, b[n:])
	if k < 0 {
		return 0, 0, protowire.ParseError(k)
	}
	return n + k, num, nil
}

// whole decodes what decodeLean left encoded in m, if anything.
func whole(m *storepb.MessageRecord) error {
	rest := m.ProtoReflect().GetUnknown()
	if len(rest) == 0 {
		return nil
	}
	m.ProtoReflect().SetUnknown(nil)
	if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(rest, m); err != nil {
		return fmt.Errorf("store: decode message %d body: %w", m.Seq, err)
	}
	return nil
}

// Whole returns the received message with its body and attributes (a
// receive's scan leaves them encoded; see decodeLean).
func (r Received) Whole() (*storepb.MessageRecord, error) {
	return r.Message, whole(r.Message)
}
