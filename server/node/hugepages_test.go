package node

import (
	"slices"
	"testing"
)

func TestHugePagesEnv(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want []string // nil: no exec
	}{
		{[]string{"A=1"}, []string{"GLIBC_TUNABLES=glibc.malloc.hugetlb=1", "A=1"}},
		{[]string{"GLIBC_TUNABLES=glibc.malloc.arena_max=2", "B=2"},
			[]string{"GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "B=2"}},
		{[]string{"GLIBC_TUNABLES=", "B=2"}, []string{"GLIBC_TUNABLES=glibc.malloc.hugetlb=1", "B=2"}},
		{[]string{"GLIBC_TUNABLES=glibc.malloc.hugetlb=0"}, nil},        // opted out
		{[]string{"X=1", "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"}, nil}, // already re-executed
	} {
		got, ok := hugePagesEnv(c.in)
		if ok != (c.want != nil) || !slices.Equal(got, c.want) {
			t.Errorf("hugePagesEnv(%q) = %q, %v; want %q", c.in, got, ok, c.want)
		}
	}
}
