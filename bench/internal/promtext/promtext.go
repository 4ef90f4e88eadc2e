// Package promtext reads the benchmarks' figures out of the nodes'
// Prometheus text expositions (/metrics).
package promtext

import (
	"strconv"
	"strings"
)

// Sum sums the samples of metric (any labels) in a Prometheus text
// exposition.
func Sum(text, metric string) float64 {
	var sum float64
	for l := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(l, metric)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}
