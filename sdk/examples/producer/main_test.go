package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/quorumq/quorumq/sdk/internal/testcluster"
)

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	var out bytes.Buffer
	if err := run(ctx, []string{"-endpoints", strings.Join(c.Endpoints(), ","), "-queue", "jobs", "-count", "300"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "sent 300 messages to jobs (0 failed)") {
		t.Errorf("output: %q", out.String())
	}
}
