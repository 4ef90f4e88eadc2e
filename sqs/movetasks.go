package sqs

import (
	"context"
	"encoding/base64"
	"sync"
	"time"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// Message move tasks (StartMessageMoveTask and friends) are quorumq's
// redrive run in steps: each step is one RedriveMessages call of up to a
// second's worth of messages (MaxNumberOfMessagesPerSecond), so a task
// moves messages exactly once whichever way it ends. Tasks live on the
// node that started them (ListMessageMoveTasks on another node does not
// see them) and stop with it.

const (
	defaultMoveRate = 500 // messages per second when the caller gives none
	maxMoveRate     = 500
	maxTasksKept    = 10 // finished tasks listed per source queue, as SQS
)

type moveTask struct {
	handle, tenant, source, dest string // dest "": each message's source queue
	rate                         int64
	started                      time.Time
	toMove                       int64

	mu      sync.Mutex
	status  string // RUNNING, COMPLETED, CANCELLING, CANCELLED, FAILED
	moved   int64
	failure string
	cancel  context.CancelFunc
}

type moveTasks struct {
	mu    sync.Mutex
	tasks []*moveTask // oldest first
	wg    sync.WaitGroup
	ctx   context.Context
	stop  context.CancelFunc
}

func newMoveTasks() *moveTasks {
	ctx, stop := context.WithCancel(context.Background())
	return &moveTasks{ctx: ctx, stop: stop}
}

func (m *moveTasks) close() {
	m.stop()
	m.wg.Wait()
}

func (m *moveTasks) find(handle string) *moveTask {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range m.tasks {
		if t.handle == handle {
			return t
		}
	}
	return nil
}

type startMoveIn struct {
	SourceArn                    string
	DestinationArn               string
	MaxNumberOfMessagesPerSecond num
}

type startMoveOut struct {
	TaskHandle string
}

func startMessageMoveTask(c *call, in []byte) (any, error) {
	var req startMoveIn
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	if req.SourceArn == "" {
		return nil, errMissingParameter("SourceArn")
	}
	source, err := c.arnQueue("SourceArn", req.SourceArn)
	if err != nil {
		return nil, err
	}
	dest := ""
	if req.DestinationArn != "" {
		if dest, err = c.arnQueue("DestinationArn", req.DestinationArn); err != nil {
			return nil, err
		}
	}
	rate := int64(defaultMoveRate)
	if req.MaxNumberOfMessagesPerSecond.set {
		if rate = req.MaxNumberOfMessagesPerSecond.v; rate < 1 || rate > maxMoveRate {
			return nil, errInvalidParameter("Value %d for parameter MaxNumberOfMessagesPerSecond is invalid. Reason: must be between 1 and %d.", rate, maxMoveRate)
		}
	}
	q, err := c.h.cfg.Client.GetQueue(c.ctx, &qv1.GetQueueRequest{Name: source})
	if err != nil {
		return nil, err
	}
	m := c.h.tasks
	m.mu.Lock()
	for _, t := range m.tasks {
		t.mu.Lock()
		running := t.tenant == c.tenant && t.source == source && (t.status == "RUNNING" || t.status == "CANCELLING")
		t.mu.Unlock()
		if running {
			m.mu.Unlock()
			return nil, errUnsupported("There is already a task running on the source queue. Only one active task is allowed for each source queue.")
		}
	}
	st := q.GetQueue().GetStats()
	t := &moveTask{handle: base64.RawURLEncoding.EncodeToString([]byte(newRequestID() + ":" + c.tenant + ":" + source)),
		tenant: c.tenant, source: source, dest: dest, rate: rate, started: time.Now(),
		toMove: st.GetVisible() + st.GetInFlight() + st.GetDelayed(), status: "RUNNING"}
	m.tasks = append(m.tasks, t)
	m.trim(c.tenant, source)
	ctx, cancel := context.WithCancel(m.ctx)
	t.cancel = cancel
	m.wg.Add(1)
	m.mu.Unlock()
	// The task keeps the caller's principal (metadata) but not its deadline.
	md := c.ctx
	go func() {
		defer m.wg.Done()
		defer cancel()
		t.run(ctx, md, c.h.cfg.Client)
	}()
	return startMoveOut{TaskHandle: t.handle}, nil
}

// trim keeps the latest finished tasks of a source queue (m.mu held).
func (m *moveTasks) trim(tenant, source string) {
	n := 0
	for i := len(m.tasks) - 1; i >= 0; i-- {
		t := m.tasks[i]
		if t.tenant != tenant || t.source != source {
			continue
		}
		if n++; n > maxTasksKept {
			m.tasks = append(m.tasks[:i], m.tasks[i+1:]...)
		}
	}
}

// run moves up to rate messages per second until the source is empty.
func (t *moveTask) run(ctx context.Context, principal context.Context, client qv1.QueueServiceClient) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		cctx := contextWithValues{Context: ctx, values: principal}
		resp, err := client.RedriveMessages(cctx, &qv1.RedriveMessagesRequest{DeadLetterQueue: t.source, TargetQueue: t.dest, MaxMessages: int32(t.rate)})
		t.mu.Lock()
		if err == nil {
			t.moved += resp.GetMoved()
		}
		switch {
		case ctx.Err() != nil:
			t.status = "CANCELLED"
		case err != nil:
			t.status, t.failure = "FAILED", asAPIError(err).msg
		case resp.GetMoved() == 0:
			t.status = "COMPLETED"
		}
		done := t.status != "RUNNING" && t.status != "CANCELLING"
		t.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// contextWithValues is ctx's deadline and cancellation with the values
// (the outgoing metadata: the principal) of another context.
type contextWithValues struct {
	context.Context
	values context.Context
}

func (c contextWithValues) Value(key any) any { return c.values.Value(key) }

type taskHandleIn struct {
	TaskHandle string
}

type cancelMoveOut struct {
	ApproximateNumberOfMessagesMoved int64
}

func cancelMessageMoveTask(c *call, in []byte) (any, error) {
	var req taskHandleIn
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	if req.TaskHandle == "" {
		return nil, errMissingParameter("TaskHandle")
	}
	t := c.h.tasks.find(req.TaskHandle)
	if t == nil || t.tenant != c.tenant {
		return nil, errResourceNotFound("The resource that you specified for the TaskHandle parameter does not exist.")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.status != "RUNNING" {
		return nil, errResourceNotFound("Only active tasks can be cancelled.")
	}
	t.status = "CANCELLING"
	t.cancel()
	return cancelMoveOut{ApproximateNumberOfMessagesMoved: t.moved}, nil
}

type listMoveIn struct {
	SourceArn  string
	MaxResults num
}

type moveTaskOut struct {
	TaskHandle                        string `json:",omitempty" xml:",omitempty"`
	Status                            string
	SourceArn                         string
	DestinationArn                    string `json:",omitempty" xml:",omitempty"`
	MaxNumberOfMessagesPerSecond      int64
	ApproximateNumberOfMessagesMoved  int64
	ApproximateNumberOfMessagesToMove int64
	FailureReason                     string `json:",omitempty" xml:",omitempty"`
	StartedTimestamp                  int64
}

type listMoveOut struct {
	Results []moveTaskOut `xml:"ListMessageMoveTasksResultEntry"`
}

func listMessageMoveTasks(c *call, in []byte) (any, error) {
	var req listMoveIn
	if err := decode(in, &req); err != nil {
		return nil, err
	}
	if req.SourceArn == "" {
		return nil, errMissingParameter("SourceArn")
	}
	source, err := c.arnQueue("SourceArn", req.SourceArn)
	if err != nil {
		return nil, err
	}
	max := int64(1)
	if req.MaxResults.set {
		if max = req.MaxResults.v; max < 1 || max > maxTasksKept {
			return nil, errInvalidParameter("Value %d for parameter MaxResults is invalid. Reason: must be between 1 and %d.", max, maxTasksKept)
		}
	}
	out := listMoveOut{Results: []moveTaskOut{}}
	m := c.h.tasks
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.tasks) - 1; i >= 0 && int64(len(out.Results)) < max; i-- {
		t := m.tasks[i]
		if t.tenant != c.tenant || t.source != source {
			continue
		}
		t.mu.Lock()
		o := moveTaskOut{Status: t.status, SourceArn: c.queueArn(t.source), MaxNumberOfMessagesPerSecond: t.rate,
			ApproximateNumberOfMessagesMoved: t.moved, ApproximateNumberOfMessagesToMove: t.toMove, FailureReason: t.failure,
			StartedTimestamp: t.started.UnixMilli()}
		if t.status == "RUNNING" {
			o.TaskHandle = t.handle
		}
		if t.dest != "" {
			o.DestinationArn = c.queueArn(t.dest)
		}
		t.mu.Unlock()
		out.Results = append(out.Results, o)
	}
	return out, nil
}
