// Package testports hands out loopback addresses for test nodes that must
// know their peers' addresses before any of them starts.
package testports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

var (
	mu   sync.Mutex
	used = map[int]bool{}
)

// Reserve returns a loopback address ("127.0.0.1:port") that was free a
// moment ago. The port comes from below the kernel's ephemeral range: a
// port from that range (":0") is also what every outgoing connection of
// every process on the machine takes, so between the check and the node's
// bind another process could take it ("address already in use"). Below the
// range only another caller's random pick can collide. No port is handed
// out twice by one process.
func Reserve() (string, error) {
	lo := ephemeralLow()
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		p := 10000 + rand.IntN(lo-10000)
		if used[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			return "", fmt.Errorf("close probe listener: %w", err)
		}
		used[p] = true
		return addr, nil
	}
	return "", fmt.Errorf("no free loopback port in [10000, %d) after 200 tries", lo)
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux
// default 32768).
func ephemeralLow() int {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				lo = v
			}
		}
	}
	return lo
}
