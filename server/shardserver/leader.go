package shardserver

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/quorumq/quorumq/server"
)

// Leader returns the shard's leader, waiting while an election runs.
func (s *Server) Leader(ctx context.Context) (uint64, error) {
	st, err := s.raft.Status(s.shard)
	if err != nil {
		return 0, err
	}
	if st.LeaderID != 0 {
		return st.LeaderID, nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ProposeTimeout)
	defer cancel()
	id, err := s.raft.WaitLeader(wctx, s.shard)
	if err != nil {
		return 0, server.StatusError(codes.Unavailable, server.ReasonNoQuorum, fmt.Sprintf("shard %d has no leader: %v", s.shard, err), nil)
	}
	return id, nil
}
