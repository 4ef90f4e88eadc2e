package store

import (
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// A record decoded without its body and attributes has every other field,
// becomes the record again with whole, and marshals whole meanwhile (a
// dead-letter move may store it before anything asks for the body).
func TestDecodeLeanKeepsEverything(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		want := &storepb.MessageRecord{
			Id: "m" + strings.Repeat("x", r.IntN(40)), Seq: r.Uint64(), SentAtMs: r.Int64(), EnqueuedAtMs: r.Int64(),
			VisibleAtMs: r.Int64(), ReceiveCount: r.Int32(), GroupId: strings.Repeat("g", r.IntN(3)),
			Size: r.Int64N(1 << 20), FailedCount: r.Int32N(5), LeaseClosed: r.IntN(2) == 0,
		}
		if r.IntN(4) > 0 {
			want.Body = strings.Repeat("é", r.IntN(2000))
		}
		for range r.IntN(4) {
			want.Tags = append(want.Tags, strings.Repeat("t", 1+r.IntN(5)))
		}
		if n := r.IntN(4); n > 0 {
			want.Attributes = map[string]string{}
			for k := range n {
				want.Attributes[strings.Repeat("k", k+1)] = strings.Repeat("v", r.IntN(30))
			}
		}
		if r.IntN(2) == 0 {
			p := r.Int32N(10)
			want.Priority = &p
		}
		v, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		lean := &storepb.MessageRecord{}
		if _, err := decodeLean(v, lean, nil); err != nil {
			t.Fatal(err)
		}
		if lean.Body != "" || len(lean.Attributes) != 0 {
			t.Fatalf("record %d: decodeLean decoded the body or attributes", i)
		}
		bare := proto.Clone(want).(*storepb.MessageRecord)
		bare.Body, bare.Attributes = "", nil
		leanKnown := proto.Clone(lean).(*storepb.MessageRecord)
		leanKnown.ProtoReflect().SetUnknown(nil)
		if !proto.Equal(leanKnown, bare) {
			t.Fatalf("record %d: lean %v, want %v", i, leanKnown, bare)
		}
		stored, err := proto.Marshal(lean)
		if err != nil {
			t.Fatal(err)
		}
		again := &storepb.MessageRecord{}
		if err := proto.Unmarshal(stored, again); err != nil || !proto.Equal(again, want) {
			t.Fatalf("record %d: the lean record marshals to %v (%v), want %v", i, again, err, want)
		}
		if err := whole(lean); err != nil || !proto.Equal(lean, want) {
			t.Fatalf("record %d: whole gives %v (%v), want %v", i, lean, err, want)
		}
	}
	if _, err := decodeLean([]byte{0x1a, 0x05, 'a'}, &storepb.MessageRecord{}, nil); err == nil {
		t.Error("a truncated record decoded without an error")
	}
}
