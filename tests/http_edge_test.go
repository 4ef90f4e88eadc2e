package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// procStatusKB reads a field (VmHWM, VmRSS) of /proc/<pid>/status in KiB.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read process status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse %s %q: %v", field, v, err)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// fill is an endless reader of one byte: a body of any size without
// holding it in memory.
type fill byte

func (f fill) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(f)
	}
	return len(p), nil
}

// restReason decodes the ErrorInfo reason and field of a REST error body.
func restReason(t *testing.T, body []byte) (reason, field string) {
	t.Helper()
	var e struct {
		Details []struct {
			Type     string            `json:"@type"`
			Reason   string            `json:"reason"`
			Metadata map[string]string `json:"metadata"`
		} `json:"details"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %.200q", err, body)
	}
	for _, d := range e.Details {
		if strings.HasSuffix(d.Type, "google.rpc.ErrorInfo") {
			return d.Reason, d.Metadata["field"]
		}
	}
	return "", ""
}

// postStreaming sends a POST whose body is streamed from body on a raw
// connection and returns the response as soon as the node answers, with
// the time that took. It does not wait for the body to be sent: the node
// is expected to answer before reading it.
func postStreaming(t *testing.T, addr, path string, body io.Reader, length int64) (*http.Response, []byte, time.Duration) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length // -1: chunked
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	wrote := make(chan error, 1)
	go func() { wrote <- req.Write(conn) }() // ends when the node closes the connection
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	elapsed := time.Since(start)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	_ = conn.Close()
	if err := <-wrote; err == nil {
		t.Errorf("the node read the whole %d byte body", length)
	}
	return resp, b, elapsed
}

// TestRESTBodyOf300MiBIsRefusedAtOnce: a 300 MiB REST body, with a length
// and chunked, is refused with 413 MESSAGE_TOO_LARGE before the node reads
// it, and the node's memory does not grow with it.
func TestRESTBodyOf300MiBIsRefusedAtOnce(t *testing.T) {
	p := startServe(t, t.TempDir())
	c := p.client(t)
	waitReady(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "edge"}); err != nil {
		t.Fatal(err)
	}
	pid := p.cmd.Process.Pid
	hwmBefore, rssBefore := procStatusKB(t, pid, "VmHWM"), procStatusKB(t, pid, "VmRSS")

	const size = 300 << 20
	prefix := `{"body": "`
	for _, length := range []int64{size, -1} {
		body := io.MultiReader(strings.NewReader(prefix), io.LimitReader(fill('x'), size-int64(len(prefix))))
		resp, b, elapsed := postStreaming(t, p.httpAddr, "/v1/queues/edge/messages", body, length)
		t.Logf("content-length %d: %d after %v", length, resp.StatusCode, elapsed)
		if reason, _ := restReason(t, b); resp.StatusCode != http.StatusRequestEntityTooLarge || reason != "MESSAGE_TOO_LARGE" {
			t.Fatalf("content-length %d: %d reason %q, want 413 MESSAGE_TOO_LARGE: %.300s", length, resp.StatusCode, reason, b)
		}
		// The bound is < 1 s; 5 s leaves room for a loaded machine.
		if elapsed > 5*time.Second {
			t.Errorf("content-length %d: answered after %v", length, elapsed)
		}
	}

	hwmAfter, rssAfter := procStatusKB(t, pid, "VmHWM"), procStatusKB(t, pid, "VmRSS")
	t.Logf("VmHWM %d → %d KiB, VmRSS %d → %d KiB", hwmBefore, hwmAfter, rssBefore, rssAfter)
	if grown := hwmAfter - hwmBefore; grown >= 64<<10 {
		t.Fatalf("peak RSS grew by %d KiB refusing the bodies, want < 64 MiB", grown)
	}

	// The node still serves.
	if _, err := c.SendMessage(ctx, &qv1.SendMessageRequest{Queue: "edge", Body: "after"}); err != nil {
		t.Fatalf("send after the refused bodies: %v", err)
	}
}

// TestRESTEdgeAnswers: on a running node, the largest legal batch with
// escaped text fits the body cap; bad JSON is 400 INVALID_ARGUMENT naming
// the field; `//` is 404 and a wrong method 405 with Allow.
func TestRESTEdgeAnswers(t *testing.T) {
	p := startServe(t, t.TempDir())
	c := p.client(t)
	waitReady(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "edge"}); err != nil {
		t.Fatal(err)
	}
	do := func(method, path string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, "http://"+p.httpAddr+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}

	// 100 entries of 41,943 bytes (4 MiB in all), a tenth of it quotes and
	// newlines that JSON escapes: about 4.4 MiB of JSON.
	text := strings.Repeat(`abcdefgh"`+"\n", 4195)[:41943]
	type entry struct {
		ID   string `json:"id"`
		Body string `json:"body"`
	}
	var batch struct {
		Entries []entry `json:"entries"`
	}
	for i := range 100 {
		batch.Entries = append(batch.Entries, entry{ID: fmt.Sprint("e", i), Body: text})
	}
	js, err := json.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	resp, b := do(http.MethodPost, "/v1/queues/edge/messages:batchSend", js)
	var sent struct {
		Successful []json.RawMessage `json:"successful"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &sent) != nil || len(sent.Successful) != 100 {
		t.Fatalf("largest legal batch (%d bytes of JSON): %d %.300s", len(js), resp.StatusCode, b)
	}

	for _, tc := range []struct{ path, body, field string }{
		{"/v1/queues/edge/messages", `{"body": "x",`, ""},
		{"/v1/queues/edge/messages", `{"body": "x", "bogus": true}`, "bogus"},
		{"/v1/queues/edge/messages:receive", `{"waitTime": "soon"}`, "wait_time"},
	} {
		resp, b := do(http.MethodPost, tc.path, []byte(tc.body))
		if reason, field := restReason(t, b); resp.StatusCode != http.StatusBadRequest || reason != "INVALID_ARGUMENT" || field != tc.field {
			t.Errorf("%s %s: %d reason %q field %q, want 400 INVALID_ARGUMENT field %q", tc.path, tc.body, resp.StatusCode, reason, field, tc.field)
		}
	}
	if resp, b := do(http.MethodPost, "/v1/queues//messages", []byte(`{"body":"x"}`)); resp.StatusCode != http.StatusNotFound {
		t.Errorf("POST //: %d %s, want 404", resp.StatusCode, b)
	}
	if resp, b := do(http.MethodDelete, "/v1/queues", nil); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, POST" {
		t.Errorf("DELETE /v1/queues: %d Allow %q %s, want 405 Allow GET, POST", resp.StatusCode, resp.Header.Get("Allow"), b)
	}
}
