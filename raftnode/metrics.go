package raftnode

import (
	"context"
	"time"
)

// Metrics receives the host's measurements. raftnode does not depend on a
// metrics library: the process implements this with OpenTelemetry (see
// server/node). Config.Metrics nil: nothing is measured.
//
// LogWritten and Applied are called on the loop goroutine, once per round
// (not per entry): they must be cheap and must not block. ProposalDone is
// called on the proposer's goroutine.
type Metrics interface {
	// LogWritten reports one round's write of log entries and HardStates
	// (all groups in one batch): how long the commit took (with the fsync
	// when synced) and the batch's size in bytes.
	LogWritten(d time.Duration, synced bool, bytes int)
	// Applied reports one group's apply of a round: the committed entries
	// applied and how long their batch took.
	Applied(group uint64, entries int, d time.Duration)
	// ProposalDone reports a proposal's outcome as its proposer saw it:
	// commit is from Propose until the round that applies the entry began
	// (queueing, append, replication to a quorum), apply until its result
	// was ready; both zero when err is not nil.
	ProposalDone(group uint64, commit, apply time.Duration, err error)
}

// ProposeTimes are one proposal's timestamps, filled in by Propose when its
// context carries them (WithProposeTimes), so a caller can draw commit and
// apply as trace spans. Zero fields: the step did not happen.
type ProposeTimes struct {
	Queued    time.Time // Propose was called
	Committed time.Time // the round that applied the entry began
	Applied   time.Time // the entry's result was ready
}

type proposeTimesKey struct{}

// WithProposeTimes returns a context whose Propose fills t in. t must not
// be read before Propose returns.
func WithProposeTimes(ctx context.Context, t *ProposeTimes) context.Context {
	return context.WithValue(ctx, proposeTimesKey{}, t)
}

func proposeTimesFrom(ctx context.Context) *ProposeTimes {
	t, _ := ctx.Value(proposeTimesKey{}).(*ProposeTimes)
	return t
}

// noMetrics is the Metrics of a host configured without any.
type noMetrics struct{}

func (noMetrics) LogWritten(time.Duration, bool, int)                      {}
func (noMetrics) Applied(uint64, int, time.Duration)                       {}
func (noMetrics) ProposalDone(uint64, time.Duration, time.Duration, error) {}
