package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Inspect the cluster", Long: clientLong("Inspect the cluster.")}
	var c clientCmd
	statusCmd := &cobra.Command{
		Use:   "status",
		Short: "Show nodes and shards (members, leader, term, applied index)",
		Long: clientLong(`Show the nodes (online or not) and every shard: members, leader, term,
applied and commit index, log range. -o json or yaml prints the
GetCluster response as the REST API does (GET /v1/cluster).`),
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
	return cmd
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
	fmt.Fprintf(w, "SHARD\tROLE\tMEMBERS\tLEADER\tTERM\tAPPLIED\tCOMMIT\tLOG\n")
	for _, s := range r.GetShards() {
		members := make([]string, 0, len(s.GetMembers()))
		for _, m := range s.GetMembers() {
			members = append(members, fmt.Sprint(m))
		}
		leader := "none"
		if s.GetLeader() != 0 {
			leader = fmt.Sprint(s.GetLeader())
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d..%d\n", s.GetId(), s.GetRole(), strings.Join(members, ","), leader,
			s.GetTerm(), s.GetAppliedIndex(), s.GetCommitIndex(), s.GetFirstIndex(), s.GetLastIndex())
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
