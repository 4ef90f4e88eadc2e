package shardserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// restReceive posts a receive over REST with no deadline of its own and
// returns the HTTP status, the message bodies and the raw answer.
func restReceive(base, queue, body string) (int, []string, string, error) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/v1/queues/"+queue+"/messages:receive", strings.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, "", err
	}
	var out struct {
		Messages []struct {
			Body string `json:"body"`
		} `json:"messages"`
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &out); err != nil {
			return resp.StatusCode, nil, string(raw), err
		}
	}
	var bodies []string
	for _, m := range out.Messages {
		bodies = append(bodies, m.Body)
	}
	return resp.StatusCode, bodies, string(raw), nil
}

// Issue 15.5: a long poll of the API's maximum (20 s) waits that long, over
// REST and over gRPC without a deadline (the router's 5 s default bounds
// proposals, not waits), and a message sent during the wait is returned at
// once. The cases run at once: ~20 s of wall time.
func TestLongPollOfTwentySecondsWithoutDeadline(t *testing.T) {
	n := startNode(t, nodeOpts{})
	for _, q := range []string{"rest-empty", "grpc-empty", "rest-late", "grpc-late"} {
		createQueue(t, n, q, nil)
	}
	const wait = 20 * time.Second
	type result struct {
		name   string
		bodies []string
		err    error
		took   time.Duration
		at     time.Time
	}
	results := make(chan result, 4)
	var wg sync.WaitGroup
	run := func(name string, f func() ([]string, error)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			bodies, err := f()
			results <- result{name, bodies, err, time.Since(start), time.Now()}
		}()
	}
	rest := func(q string) func() ([]string, error) {
		return func() ([]string, error) {
			code, bodies, raw, err := restReceive(n.Base, q, `{"waitTime":"20s"}`)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("HTTP %d: %s", code, raw)
			}
			return bodies, err
		}
	}
	grpcPoll := func(q string) func() ([]string, error) {
		return func() ([]string, error) {
			r, err := n.Client.ReceiveMessages(context.Background(), &qv1.ReceiveMessagesRequest{Queue: q, WaitTime: durationpb.New(wait)})
			var bodies []string
			for _, m := range r.GetMessages() {
				bodies = append(bodies, m.GetBody())
			}
			return bodies, err
		}
	}
	begin := time.Now()
	run("rest-empty", rest("rest-empty"))
	run("grpc-empty", grpcPoll("grpc-empty"))
	run("rest-late", rest("rest-late"))
	run("grpc-late", grpcPoll("grpc-late"))

	// At 12 s, one message for each "late" queue.
	<-time.After(time.Until(begin.Add(12 * time.Second)))
	sentAt := map[string]time.Time{}
	for _, q := range []string{"rest-late", "grpc-late"} {
		send(t, n, q, "late")
		sentAt[q] = time.Now()
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil {
			t.Errorf("%s: failed after %v: %v", r.name, r.took, r.err)
			continue
		}
		if sent, late := sentAt[r.name]; late {
			if len(r.bodies) != 1 || r.bodies[0] != "late" {
				t.Errorf("%s: got %q, want the message sent at 12 s", r.name, r.bodies)
			}
			if lag := r.at.Sub(sent); lag > 2*time.Second {
				t.Errorf("%s: answered %v after the send, want at once", r.name, lag)
			}
			continue
		}
		if len(r.bodies) != 0 {
			t.Errorf("%s: got %q from an empty queue", r.name, r.bodies)
		}
		if r.took < wait || r.took > wait+4*time.Second {
			t.Errorf("%s: answered empty after %v, want after its 20 s wait", r.name, r.took)
		}
	}
}
