package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// Every acknowledged send survives a SIGKILL of the process: the log entry
// was fsynced before the acknowledgement. With --state-without-wal the
// state written since its last flush is lost with the process and rebuilt
// from the log.
func TestAcknowledgedSendsSurviveKill9(t *testing.T) {
	t.Run("one instance", func(t *testing.T) { ackedSurviveKill9(t) })
	t.Run("state without WAL", func(t *testing.T) { ackedSurviveKill9(t, "--state-without-wal") })
}

func ackedSurviveKill9(t *testing.T, flags ...string) {
	dir := t.TempDir()
	p := startServe(t, dir, flags...)
	c := p.client(t)
	waitReady(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "durable"}); err != nil {
		t.Fatal(err)
	}

	// Concurrent senders; the process is killed while they run.
	var (
		mu    sync.Mutex
		acked = map[string]string{} // message id -> body
		wg    sync.WaitGroup
	)
	loadCtx, stopLoad := context.WithTimeout(ctx, 20*time.Second)
	defer stopLoad()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 2000 && loadCtx.Err() == nil; i++ {
				body := fmt.Sprintf("w%d-%d", w, i)
				r, err := c.SendMessage(loadCtx, &qv1.SendMessageRequest{Queue: "durable", Body: body})
				if err != nil {
					return // the kill: the outcome of this one is unknown
				}
				mu.Lock()
				acked[r.GetMessageId()] = body
				mu.Unlock()
			}
		}(w)
	}
	// Kill once a few hundred sends are acknowledged.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 || loadCtx.Err() != nil {
			break
		}
		<-time.After(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	stopLoad()
	wg.Wait()
	t.Logf("%d sends acknowledged before SIGKILL", len(acked))

	if _, err := os.Stat(filepath.Join(dir, "raftlog")); (err == nil) != (len(flags) > 0) {
		t.Fatalf("flags %v: raftlog/ %v", flags, err)
	}
	p2 := startServe(t, dir, flags...)
	c2 := p2.client(t)
	waitReady(t, c2)
	got := map[string]bool{}
	for {
		r, err := c2.ReceiveMessages(ctx, &qv1.ReceiveMessagesRequest{Queue: "durable", MaxMessages: 100, VisibilityTimeout: nil})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetMessages()) == 0 {
			break
		}
		for _, m := range r.GetMessages() {
			got[m.GetMessageId()] = true
			if want, ok := acked[m.GetMessageId()]; ok && want != m.GetBody() {
				t.Fatalf("message %s body %q, sent %q", m.GetMessageId(), m.GetBody(), want)
			}
		}
	}
	lost := 0
	for id := range acked {
		if !got[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged messages lost after SIGKILL", lost, len(acked))
	}
	t.Logf("all %d acknowledged messages received after restart (%d received in all)", len(acked), len(got))
}
