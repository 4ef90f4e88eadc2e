package shardserver

import (
	"errors"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/quorumq/quorumq/store"
)

// FuzzValidateMessage: request validation never panics, rejects with a
// field error naming a field, and whatever it accepts is within the bounds.
func FuzzValidateMessage(f *testing.F) {
	f.Add("hello", "k", "v", "tag", int64(0), int32(0), "g", "key")
	f.Add("", "", "", "", int64(-1), int32(-1), "", "")
	f.Add("\xff\xfe", "k\x00", "v", "t", int64(1<<62), int32(999999999), "\x80", "\xc3")
	f.Fuzz(func(t *testing.T, body, attrKey, attrVal, tag string, delaySec int64, delayNanos int32, group, key string) {
		m := MessageInput{
			Body: body, Attributes: map[string]string{attrKey: attrVal}, Tags: []string{tag},
			delay:   &durationpb.Duration{Seconds: delaySec, Nanos: delayNanos},
			GroupID: group, IdempotencyKey: key,
		}
		err := ValidateMessage("", m)
		if err != nil {
			var fe *store.FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("validation error %v names no field", err)
			}
			return
		}
		switch {
		case len(body) == 0 || len(body) > maxBodyBytes || !utf8.ValidString(body):
			t.Fatalf("accepted body of %d bytes (valid UTF-8: %v)", len(body), utf8.ValidString(body))
		case attrKey == "" || len(attrKey) > maxAttrKeyBytes || !utf8.ValidString(attrKey) || !utf8.ValidString(attrVal):
			t.Fatalf("accepted attribute %q", attrKey)
		case tag == "" || len(tag) > maxTagBytes || !utf8.ValidString(tag):
			t.Fatalf("accepted tag %q", tag)
		case len(group) > maxIDBytes || len(key) > maxIDBytes:
			t.Fatal("accepted an over-long id")
		}
		if d := m.delay.AsDuration(); d < 0 || d > maxDelay {
			t.Fatalf("accepted delay %v", d)
		}
	})
}

// FuzzDecodeReceiptHandle: any string a client sends as a receipt handle is
// either decoded or refused as invalid input, never a panic.
func FuzzDecodeReceiptHandle(f *testing.F) {
	f.Add("AQAAAAAAAAAAAAAAAAAAAAIAAAAAAAAAAwAAAAEe_Be4gtPhuetNLczJTb1F")
	f.Add("")
	f.Add("!!!")
	f.Add("AAAA====")
	f.Fuzz(func(t *testing.T, h string) {
		b, err := DecodeHandle("receipt_handle", h)
		if err != nil {
			if !errors.Is(err, store.ErrInvalidArgument) && !errors.Is(err, store.ErrInvalidReceipt) {
				t.Fatalf("decodeHandle(%q) error %v is neither invalid argument nor invalid handle", h, err)
			}
			return
		}
		if len(h) == 0 || len(h) > maxHandleChars || encodeHandle(b) != h {
			t.Fatalf("accepted %q (re-encodes to %q)", h, encodeHandle(b))
		}
		_, _ = store.ParseHandle(b)
	})
}
