package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect the cluster and its membership", Long: clientLong("Inspect the cluster and its membership.")}
	var c clientCmd
	statusCmd := &cobra.Command{
		Use:   "status",
		Short: "Show nodes and shards (members, leader, term, applied index, lag)",
		Long: clientLong(`Show the nodes (online or not) and the shards the answering node holds a
replica of: members, leader, term, applied and commit index, log range, and
on a shard it leads each member's lag in entries (node:entries). -o json or
yaml prints the GetCluster response as the REST API does (GET /v1/cluster),
with every shard's replica set and the change under way.`),
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := qv1.NewClusterServiceClient(conn).GetCluster(ctx, &qv1.GetClusterRequest{})
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r)
				}
				return printCluster(cmd, r)
			})
		}),
	}
	c.register(statusCmd)
	cmd.AddCommand(statusCmd)

	var nc clientCmd
	nodesCmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the storage nodes and every shard's replicas, as recorded in the metadata shard",
		Long: clientLong(`List the membership records: every storage node ever admitted (id,
addresses, state joining/active/draining/removed, incarnation) and every
shard's replica set (voters, learners, the change under way). -o json or
yaml prints the ListNodes response (GET /v1/cluster/nodes).`),
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return nc.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := qv1.NewClusterServiceClient(conn).ListNodes(ctx, &qv1.ListNodesRequest{})
				if err != nil {
					return err
				}
				if nc.structured() {
					return nc.write(cmd.OutOrStdout(), r)
				}
				return printNodes(cmd, r)
			})
		}),
	}
	nc.register(nodesCmd)
	cmd.AddCommand(nodesCmd)

	var rc clientCmd
	removeCmd := &cobra.Command{
		Use:   "remove <node-id>",
		Short: "Retire a storage node: its replicas move to other nodes, then its id is retired",
		Long: clientLong(`Retire a storage node (also a dead one, e.g. a machine that lost its
disk): it becomes draining, the coordinator moves each of its replicas to
another active node (or, with no node to take it, removes it), one move at
a time, and then marks it removed; its id is never used again. The same
call as cluster drain. Follow the progress with cluster nodes.`),
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || id == 0 {
				return fmt.Errorf("node id %q: want a positive integer", args[0])
			}
			return rc.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := qv1.NewClusterServiceClient(conn).RemoveNode(ctx, &qv1.RemoveNodeRequest{NodeId: id})
				if err != nil {
					return err
				}
				if rc.structured() {
					return rc.write(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %d: %s\n", r.GetNode().GetId(), nodeState(r.GetNode()))
				return nil
			})
		}),
	}
	rc.register(removeCmd)
	cmd.AddCommand(removeCmd)
	cmd.AddCommand(newDrainCmd(), newMoveReplicaCmd(), newRebalanceCmd(), newAddShardsCmd())
	return cmd
}

func nodeState(n *qv1.NodeInfo) string {
	return strings.ToLower(strings.TrimPrefix(n.GetState().String(), "NODE_STATE_"))
}

func printNodes(cmd *cobra.Command, r *qv1.ListNodesResponse) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
	replicas := replicaCounts(r)
	fmt.Fprintf(w, "NODE\tSTATE\tPEER ADDRESS\tCLIENT ADDRESS\tINCARNATION\tREPLICAS\n")
	for _, n := range r.GetNodes() {
		state := nodeState(n)
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%016x\t%d\n", n.GetId(), state, n.GetPeerAddress(), n.GetClientAddress(), n.GetIncarnation(), replicas[n.GetId()])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "SHARD\tRF\tVOTERS\tLEARNERS\tCHANGE\n")
	for _, rs := range r.GetReplicaSets() {
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\n", rs.GetShard(), rs.GetReplicationFactor(), joinIDs(rs.GetVoters()), joinIDs(rs.GetLearners()), changeOf(rs))
	}
	return w.Flush()
}

// changeOf describes a replica set's change under way.
func changeOf(rs *qv1.ReplicaSet) string {
	switch {
	case rs.GetPendingNode() == 0:
		return "-"
	case rs.GetPendingRemoveNode() != 0:
		return fmt.Sprintf("move %d->%d", rs.GetPendingRemoveNode(), rs.GetPendingNode())
	case rs.GetPendingLearner():
		return fmt.Sprintf("observe %d", rs.GetPendingNode())
	case rs.GetPendingAdd():
		return fmt.Sprintf("add %d", rs.GetPendingNode())
	}
	return fmt.Sprintf("remove %d", rs.GetPendingNode())
}

// replicaCounts counts each node's voting replicas over every shard.
func replicaCounts(r *qv1.ListNodesResponse) map[uint64]int {
	out := map[uint64]int{}
	for _, rs := range r.GetReplicaSets() {
		for _, v := range rs.GetVoters() {
			out[v]++
		}
	}
	return out
}

func joinIDs(ids []uint64) string {
	if len(ids) == 0 {
		return "-"
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = fmt.Sprint(id)
	}
	return strings.Join(out, ",")
}

func printCluster(cmd *cobra.Command, r *qv1.GetClusterResponse) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
	fmt.Fprintf(w, "NODE\tRAFT ADDRESS\tSTATE\n")
	for _, n := range r.GetNodes() {
		state := "offline"
		if n.GetOnline() {
			state = "online"
		}
		if n.GetSelf() {
			state += " (answering)"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\n", n.GetId(), n.GetRaftAddress(), state)
	}
	fmt.Fprintln(w)
	if r.GetRole() == "api" {
		fmt.Fprintf(w, "answered by API-tier node %d (the shard view it routes by)\n\n", r.GetNodeId())
	}
	led := map[uint64]int{}
	for _, s := range r.GetShards() {
		led[s.GetLeader()]++
	}
	fmt.Fprintf(w, "SHARD\tROLE\tMEMBERS\tLEADER\tTERM\tAPPLIED\tCOMMIT\tLOG\tLAG\n")
	for _, s := range r.GetShards() {
		members := make([]string, 0, len(s.GetMembers()))
		for _, m := range s.GetMembers() {
			if slices.Contains(s.GetLearners(), m) {
				members = append(members, fmt.Sprintf("%d(learner)", m))
				continue
			}
			members = append(members, fmt.Sprint(m))
		}
		leader := "none"
		if s.GetLeader() != 0 {
			leader = fmt.Sprint(s.GetLeader())
		}
		lag := make([]string, 0, len(s.GetLag()))
		for _, l := range s.GetLag() { // on the leader only
			lag = append(lag, fmt.Sprintf("%d:%d", l.GetNode(), l.GetEntries()))
		}
		if len(lag) == 0 {
			lag = append(lag, "-")
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d..%d\t%s\n", s.GetId(), s.GetRole(), strings.Join(members, ","), leader,
			s.GetTerm(), s.GetAppliedIndex(), s.GetCommitIndex(), s.GetFirstIndex(), s.GetLastIndex(), strings.Join(lag, ","))
	}
	if len(r.GetShards()) > 1 {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "NODE\tLEADS\n")
		for _, n := range r.GetNodes() {
			fmt.Fprintf(w, "%d\t%d shards\n", n.GetId(), led[n.GetId()])
		}
	}
	return w.Flush()
}
