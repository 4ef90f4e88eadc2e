package node

import (
	"testing"
	"time"
)

// The HTTP servers bound a whole request's read (a slow client cannot hold
// a connection and a body buffer forever) and close idle connections; the
// read bound leaves a slow client time for the largest body (4 MiB).
func TestHTTPServerTimeouts(t *testing.T) {
	s := newHTTPServer(nil)
	if s.ReadTimeout < 30*time.Second || s.ReadTimeout > 5*time.Minute {
		t.Errorf("ReadTimeout %v: want bounded, at least 30s", s.ReadTimeout)
	}
	if s.IdleTimeout <= 0 || s.IdleTimeout > 10*time.Minute {
		t.Errorf("IdleTimeout %v: want bounded", s.IdleTimeout)
	}
	if s.ReadHeaderTimeout <= 0 || s.ReadHeaderTimeout > s.ReadTimeout {
		t.Errorf("ReadHeaderTimeout %v", s.ReadHeaderTimeout)
	}
	if s.MaxHeaderBytes != 64<<10 {
		t.Errorf("MaxHeaderBytes %d, want 64 KiB", s.MaxHeaderBytes)
	}
}
