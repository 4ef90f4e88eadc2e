package server

import (
	"errors"
	"testing"

	"github.com/quorumq/quorumq/store"
)

// inEntry names the failing field of batch entry i, and a valid entry
// passes without building its path.
func TestInEntryNamesTheField(t *testing.T) {
	bad := messageInput{body: ""}
	_, err := inEntry(3, func(p string) (struct{}, error) { return struct{}{}, validateMessage(p, bad) })
	var fe *store.FieldError
	if !errors.As(err, &fe) || fe.Field != "entries[3].body" {
		t.Fatalf("got %v, want a field error on entries[3].body", err)
	}
	_, err = inEntry(7, func(p string) ([]byte, error) { return decodeHandle(p+"receipt_handle", "") })
	if !errors.As(err, &fe) || fe.Field != "entries[7].receipt_handle" {
		t.Fatalf("got %v, want a field error on entries[7].receipt_handle", err)
	}
	good := messageInput{body: "hello", attributes: map[string]string{"k": "v"}, tags: []string{"a"}}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := inEntry(5, func(p string) (struct{}, error) { return struct{}{}, validateMessage(p, good) }); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("validating a valid entry allocated %v times", allocs)
	}
}
