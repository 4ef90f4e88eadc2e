package node

import "testing"

// TestAdvertisedAddr: a node records the --grpc-addr it was given when it
// names a host (with the listener's port for port 0), else the listener's.
func TestAdvertisedAddr(t *testing.T) {
	for _, c := range []struct{ configured, listening, want string }{
		{"node-3.example:7000", "10.0.0.3:7000", "node-3.example:7000"},
		{"127.0.0.1:0", "127.0.0.1:41234", "127.0.0.1:41234"},
		{":7000", "[::]:7000", "[::]:7000"},
		{"0.0.0.0:7000", "0.0.0.0:7000", "0.0.0.0:7000"},
		{"[::]:7000", "[::]:7000", "[::]:7000"},
		{"not an address", "127.0.0.1:7000", "127.0.0.1:7000"},
	} {
		if got := advertisedAddr(c.configured, c.listening); got != c.want {
			t.Errorf("advertisedAddr(%q, %q) = %q, want %q", c.configured, c.listening, got, c.want)
		}
	}
}
