package node

import "strings"

// hugePagesTunable asks glibc's malloc (2.35+; other C libraries ignore
// it) to madvise(MADV_HUGEPAGE) the large blocks it maps.
const hugePagesTunable = "glibc.malloc.hugetlb=1"

// hugePagesEnv returns environ with hugePagesTunable added to
// GLIBC_TUNABLES (one entry, first), or ok false when GLIBC_TUNABLES
// already sets glibc.malloc.hugetlb: the operator's choice stands, and a
// re-executed process does not execute again.
func hugePagesEnv(environ []string) (env []string, ok bool) {
	val := hugePagesTunable
	rest := make([]string, 0, len(environ))
	for _, kv := range environ {
		cur, isTunables := strings.CutPrefix(kv, "GLIBC_TUNABLES=")
		if !isTunables {
			rest = append(rest, kv)
			continue
		}
		if strings.Contains(cur, "glibc.malloc.hugetlb") {
			return nil, false
		}
		if cur != "" {
			val = cur + ":" + hugePagesTunable
		}
	}
	return append([]string{"GLIBC_TUNABLES=" + val}, rest...), true
}
