package shardserver

import (
	"context"

	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// SetAllowance makes bytes (0: unlimited) the tenant's stored-bytes
// allowance on this data shard; a data shard enforces no send rate or
// queue count of its own.
func (s *Server) SetAllowance(ctx context.Context, tenant string, bytes int64) error {
	_, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_SetTenantQuota{SetTenantQuota: &storepb.SetTenantQuota{
		Tenant: tenant, Quota: &storepb.TenantQuota{MaxStoredBytes: bytes},
	}}})
	return err
}
