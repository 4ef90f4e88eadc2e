package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// cluster drain, move-replica and rebalance (issue 17).

func parseID(what, s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || (id == 0 && what != "shard") {
		return 0, fmt.Errorf("%s %q: want a positive integer", what, s)
	}
	return id, nil
}

func newDrainCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use:   "drain <node-id>",
		Short: "Move every replica off a storage node, then retire it",
		Long: clientLong(`Drain a storage node: it becomes draining; the coordinator moves each of
its replicas to the active node holding the fewest (a new replica is added
as a learner, catches up, then replaces it in one joint change), one move
at a time; a shard it leads hands leadership over first; then the node is
removed and its id never used again. The same call as cluster remove.
Follow the progress with cluster nodes.`),
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			id, err := parseID("node id", args[0])
			if err != nil {
				return err
			}
			return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := qv1.NewClusterServiceClient(conn).RemoveNode(ctx, &qv1.RemoveNodeRequest{NodeId: id})
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %d: %s\n", r.GetNode().GetId(), nodeState(r.GetNode()))
				return nil
			})
		}),
	}
	c.register(cmd)
	return cmd
}

func newMoveReplicaCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use:   "move-replica <shard> <from-node> <to-node>",
		Short: "Move a shard's replica from one node to another",
		Long: clientLong(`Move shard's voting replica from one node to another (an active node
without one): the new replica is added as a learner, catches up from a
snapshot and the log, then one joint-consensus change promotes it and
removes the old one. One change per shard at a time. The move is recorded
in the metadata shard first: if the coordinator fails it is finished by
the next one, or rolled back if the new replica never catches up.`),
		Args: cobra.ExactArgs(3),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			shard, err := parseID("shard", args[0])
			if err != nil {
				return err
			}
			from, err := parseID("from node", args[1])
			if err != nil {
				return err
			}
			to, err := parseID("to node", args[2])
			if err != nil {
				return err
			}
			return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := qv1.NewClusterServiceClient(conn).MoveReplica(ctx, &qv1.MoveReplicaRequest{Shard: shard, FromNode: from, ToNode: to})
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "shard %d: %s\n", shard, changeOf(r.GetReplicaSet()))
				return nil
			})
		}),
	}
	c.register(cmd)
	return cmd
}

func newRebalanceCmd() *cobra.Command {
	var c clientCmd
	var wait time.Duration
	var expect int
	cmd := &cobra.Command{
		Use:   "rebalance",
		Short: "Wait until the storage nodes hold even shares of the replicas",
		Long: clientLong(`The coordinator rebalances by itself: while an active node holds two or
more data-shard replicas more than another, it moves one (one move at a
time in the cluster). rebalance follows it: it prints each node's replica
count as it changes and returns once every active node is within one of
the others and no change is under way (or fails after --wait). With
--expect-nodes it also waits for that many active nodes (a node started
with --join a moment ago may not be admitted yet).`),
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			deadline := time.Now().Add(wait)
			last := ""
			for {
				var r *qv1.ListNodesResponse
				err := c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
					var err error
					r, err = qv1.NewClusterServiceClient(conn).ListNodes(ctx, &qv1.ListNodesRequest{})
					return err
				})
				if err != nil {
					return err
				}
				line, done := balance(r, expect)
				if line != last {
					fmt.Fprintln(cmd.OutOrStdout(), line)
					last = line
				}
				if done {
					fmt.Fprintln(cmd.OutOrStdout(), "balanced")
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("not balanced after %v: %s", wait, line)
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(time.Second):
				}
			}
		}),
	}
	cmd.Flags().DurationVar(&wait, "wait", 10*time.Minute, "give up after this long")
	cmd.Flags().IntVar(&expect, "expect-nodes", 0, "also wait until this many nodes are active (0: any)")
	c.register(cmd)
	return cmd
}

// balance describes the data-shard replicas per active node and reports
// whether they are within one of each other with no change under way.
func balance(r *qv1.ListNodesResponse, expect int) (string, bool) {
	load := map[uint64]int{}
	var ids []uint64
	for _, n := range r.GetNodes() {
		if n.GetState() == qv1.NodeState_NODE_STATE_ACTIVE {
			load[n.GetId()] = 0
			ids = append(ids, n.GetId())
		}
	}
	busy := 0
	sets := r.GetReplicaSets()
	for _, rs := range sets {
		if rs.GetPendingNode() != 0 {
			busy++
		}
		if rs.GetShard() == 0 && len(sets) > 1 {
			continue // the metadata shard is not rebalanced
		}
		for _, v := range rs.GetVoters() {
			if _, ok := load[v]; ok {
				load[v]++
			}
		}
	}
	for _, n := range r.GetNodes() {
		if n.GetState() == qv1.NodeState_NODE_STATE_JOINING || n.GetState() == qv1.NodeState_NODE_STATE_DRAINING {
			busy++
		}
	}
	line := "data-shard replicas per node:"
	lo, hi := -1, 0
	for _, id := range ids {
		line += fmt.Sprintf(" %d=%d", id, load[id])
		if lo < 0 || load[id] < lo {
			lo = load[id]
		}
		hi = max(hi, load[id])
	}
	line += fmt.Sprintf("; changes under way: %d", busy)
	return line, len(ids) > 0 && (expect == 0 || len(ids) == expect) && busy == 0 && hi-lo <= 1
}
