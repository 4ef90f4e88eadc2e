//go:build linux && cgo

package node

import (
	"os"
	"syscall"
)

// ExecWithHugePages re-executes the process (same pid, arguments and
// environment) with glibc told to back its large allocations with
// transparent huge pages (hugePagesEnv), unless GLIBC_TUNABLES already
// says something about glibc.malloc.hugetlb (glibc.malloc.hugetlb=0 opts
// out) or the kernel has no transparent huge pages. It returns only if it
// does not re-execute or the exec fails.
//
// Why: Pebble allocates each memtable (up to 64 MiB) with calloc, and a
// fresh node allocates about 190 MiB of them before it recycles one
// (README, "Performance"). Filled through 4 KiB pages each costs a minor
// fault, tens of microseconds on a loaded VM: the copy into the memtable
// was 16 % of a node's CPU in `make bench-peers`. With huge pages a 64 MiB
// memtable costs 32 faults instead of 16,384. glibc reads its tunables
// only at process start, hence the exec. The serve command's main calls
// it before anything else; nothing else should.
func ExecWithHugePages() {
	env, ok := hugePagesEnv(os.Environ())
	if !ok {
		return
	}
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage/enabled"); err != nil {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	_ = syscall.Exec(exe, os.Args, env)
}
