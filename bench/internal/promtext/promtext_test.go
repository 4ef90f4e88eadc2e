package promtext

import "testing"

func TestSum(t *testing.T) {
	text := `# HELP x_total bytes
# TYPE x_total counter
x_total{node="1"} 10
x_total{node="2"} 2.5
x_total_other 100
x_totalish{a="b"} 7
x_total 1e3
`
	if got := Sum(text, "x_total"); got != 1012.5 {
		t.Fatalf("Sum = %v, want 1012.5", got)
	}
	if got := Sum(text, "missing"); got != 0 {
		t.Fatalf("Sum of a missing metric = %v, want 0", got)
	}
}
