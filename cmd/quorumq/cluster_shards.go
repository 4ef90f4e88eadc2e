package main

import (
	"context"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// cluster add-shards (issue 17).

func newAddShardsCmd() *cobra.Command {
	var c clientCmd
	var expect uint32
	cmd := &cobra.Command{
		Use:   "add-shards <count>",
		Short: "Add count shards (Raft groups) to the running cluster",
		Long: clientLong(`Add count new shards to the cluster, on the current storage nodes: each
gets a replica set of the replication factor's active nodes (those holding
the fewest replicas first), which start it; the command returns once every
new shard has a leader. count is how many to add, not the new total; the
cluster holds at most 256 shards, and the count never shrinks.

Queues keep their partitions where they are (each queue records the shard
of each partition); new queues, and new partitions of queues that grow
(queue update --partitions), are placed over every shard, the new ones
included. Nodes restarted later may keep their --shards flag (the count the
cluster was bootstrapped with) or give the new total.

The command reads the shard count first and adds only if it is still that
count when the metadata shard applies the call, so two operators adding at
once do not both add; --expect-shards gives the count to expect instead
(for scripts: a re-run fails with SHARD_COUNT_CHANGED rather than adding
again). Needs a multi-node cluster (started with --peers).`),
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			n, err := parseID("count", args[0])
			if err != nil {
				return err
			}
			if n > 256 {
				return fmt.Errorf("count %d: the cluster holds at most 256 shards", n)
			}
			return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				cl := qv1.NewClusterServiceClient(conn)
				cur := expect
				if cur == 0 {
					r, err := cl.ListNodes(ctx, &qv1.ListNodesRequest{})
					if err != nil {
						return err
					}
					cur = uint32(len(r.GetReplicaSets()))
				}
				r, err := cl.AddShards(ctx, &qv1.AddShardsRequest{Count: uint32(n), ExpectShards: cur})
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "shards: %d -> %d\n", r.GetShardCount()-uint32(n), r.GetShardCount())
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
				fmt.Fprintf(w, "SHARD\tRF\tVOTERS\n")
				for _, rs := range r.GetReplicaSets() {
					fmt.Fprintf(w, "%d\t%d\t%s\n", rs.GetShard(), rs.GetReplicationFactor(), joinIDs(rs.GetVoters()))
				}
				return w.Flush()
			})
		}),
	}
	cmd.Flags().Uint32Var(&expect, "expect-shards", 0, "add only if the cluster has exactly this many shards (0: the count read first)")
	c.register(cmd)
	return cmd
}
