package shardserver

import (
	"errors"
	"testing"

	"github.com/quorumq/quorumq/store"
)

// inEntry names the failing field of batch entry i, and a valid entry
// passes without building its path.
func TestInEntryNamesTheField(t *testing.T) {
	bad := MessageInput{Body: ""}
	_, err := InEntry(3, func(p string) (struct{}, error) { return struct{}{}, ValidateMessage(p, bad) })
	var fe *store.FieldError
	if !errors.As(err, &fe) || fe.Field != "entries[3].body" {
		t.Fatalf("got %v, want a field error on entries[3].body", err)
	}
	_, err = InEntry(7, func(p string) ([]byte, error) { return DecodeHandle(p+"receipt_handle", "") })
	if !errors.As(err, &fe) || fe.Field != "entries[7].receipt_handle" {
		t.Fatalf("got %v, want a field error on entries[7].receipt_handle", err)
	}
	good := MessageInput{Body: "hello", Attributes: map[string]string{"k": "v"}, Tags: []string{"a"}}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := InEntry(5, func(p string) (struct{}, error) { return struct{}{}, ValidateMessage(p, good) }); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("validating a valid entry allocated %v times", allocs)
	}
}
