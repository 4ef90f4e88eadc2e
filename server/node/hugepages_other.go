//go:build !linux || !cgo

package node

// ExecWithHugePages does nothing here: without cgo Pebble's memtables
// are Go memory, and the tunable it sets is glibc's.
func ExecWithHugePages() {}

var _ = hugePagesEnv // used on Linux with cgo
