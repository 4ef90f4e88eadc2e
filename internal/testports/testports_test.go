package testports

import (
	"net"
	"strconv"
	"testing"
)

// Reserved ports are distinct, bindable and below the ephemeral range.
func TestReserve(t *testing.T) {
	lo := ephemeralLow()
	seen := map[string]bool{}
	for range 50 {
		addr, err := Reserve()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		if p, _ := strconv.Atoi(port); p < 10000 || p >= lo {
			t.Fatalf("port %d outside [10000, %d)", p, lo)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("reserved %s is not bindable: %v", addr, err)
		}
		l.Close()
	}
}
