package raftnode

import "context"

// Class is a proposal's lane in its group's queue. Each round the loop
// takes queued proposals from every class in turn, one at a time, up to
// roundProposalBytes per group, and each class has its own queue bound:
// a backlog in one class (thousands of sends) can neither delay another
// (receives, deletes) by more than a bounded round nor fill its queue.
type Class uint8

const (
	// ClassDefault is the class of a context without WithClass.
	ClassDefault Class = iota
	// ClassConsume is a second lane; the queue server puts the commands
	// that drain a queue (receives, deletes, visibility changes) in it.
	ClassConsume
	numClasses
)

// roundProposalBytes bounds the proposal cost (payload plus
// proposalOverhead each) a round takes from one group's queue; what is
// left waits for the next round, which starts at once. Each class gets at
// least one proposal per round, whatever its size.
const roundProposalBytes = 2 << 20

type classKey struct{}

// WithClass returns a context whose proposals (Host.Propose) go in class c.
func WithClass(ctx context.Context, c Class) context.Context {
	return context.WithValue(ctx, classKey{}, c)
}

// classFrom returns the class ctx carries (ClassDefault if none or out of
// range).
func classFrom(ctx context.Context) Class {
	if c, ok := ctx.Value(classKey{}).(Class); ok && c < numClasses {
		return c
	}
	return ClassDefault
}

// takeRound removes from queues (one per class, each in FIFO order) the
// proposals of one round: round-robin over the classes, one proposal at a
// time, starting with the highest class, while the round's cost stays
// within budget (a class's first proposal is always taken). live reports
// whether a proposal's caller still waits; the others are dropped without
// counting against the budget. It returns the proposals taken, highest
// class first (so if raft refuses the round's tail at its uncommitted
// limit, the lower class pays), the cost removed from each queue (taken or
// dropped) and whether any proposal is left.
func takeRound(queues *[numClasses][]*proposal, budget int, live func(*proposal) bool) (taken []*proposal, cost [numClasses]int, left bool) {
	var per [numClasses][]*proposal
	total := 0
	for {
		progress := false
		for c := int(numClasses) - 1; c >= 0; c-- {
			q := queues[c]
			for len(q) > 0 && !live(q[0]) {
				cost[c] += len(q[0].data) + proposalOverhead
				q[0] = nil // the backing array outlives the slice's front
				q = q[1:]
			}
			queues[c] = q
			if len(q) == 0 {
				continue
			}
			pc := len(q[0].data) + proposalOverhead
			if len(per[c]) > 0 && total+pc > budget {
				continue
			}
			per[c] = append(per[c], q[0])
			q[0] = nil
			queues[c] = q[1:]
			cost[c] += pc
			total += pc
			progress = true
		}
		if !progress {
			break
		}
	}
	for c := int(numClasses) - 1; c >= 0; c-- {
		taken = append(taken, per[c]...)
		left = left || len(queues[c]) > 0
	}
	return taken, cost, left
}
