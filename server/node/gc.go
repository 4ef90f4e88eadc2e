package node

import (
	"os"
	"runtime/debug"
)

// GCPercent is the garbage collector's target (GOGC) of a `quorumq serve`
// process unless the GOGC environment variable sets one. The live heap of
// a node is small (tens of MiB: Pebble's block cache and memtables are not
// Go memory) while every message allocates (gRPC frames, protos), so the
// default 100 collects often for little gain; 200 cut the CPU per message
// of BenchmarkSendMessageConcurrent by about a tenth (400 did no better)
// for a few tens of MiB more heap.
const GCPercent = 200

// TuneGC applies GCPercent unless GOGC is set. The serve command calls it;
// Start does not (tests and embedders own their process's settings).
func TuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
}
