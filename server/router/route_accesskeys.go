package router

import (
	"context"
	"fmt"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// credentialsMethod prefixes CredentialsService's full method names.
const credentialsMethod = "/quorumq.v1.CredentialsService/"

// peerAccessKeyMethod answers a SigV4 verifier's lookup on the metadata
// shard's leader (peer listener, no client token: a verifier has none).
const peerAccessKeyMethod = "/" + server.PeerService + "/AccessKeyGrant"

// CredentialsServer serves CredentialsService on every node: calls go to
// the metadata shard's leader, where the keys live.
type CredentialsServer struct {
	qv1.UnimplementedCredentialsServiceServer
	router *Router
	keys   *AccessKeys // this node's lookup cache: a revoke here drops the key at once
}

// NewCredentialsServer returns the CredentialsService of a node. keys, if
// not nil, is the node's lookup cache, which forgets a key revoked through
// this node at once (other nodes within their cache's TTL).
func NewCredentialsServer(r *Router, keys *AccessKeys) *CredentialsServer {
	return &CredentialsServer{router: r, keys: keys}
}

// CreateAccessKey implements CredentialsService.
func (c *CredentialsServer) CreateAccessKey(ctx context.Context, req *qv1.CreateAccessKeyRequest) (*qv1.CreateAccessKeyResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).CreateAccessKey)
	}
	if _, _, err := shardserver.KeyTenant(ctx, req.GetTenant()); err != nil {
		return nil, err
	}
	return call(ctx, c.router, target{shard: MetadataShard}, credentialsMethod+"CreateAccessKey", req, (*shardserver.Server).CreateAccessKey)
}

// ListAccessKeys implements CredentialsService.
func (c *CredentialsServer) ListAccessKeys(ctx context.Context, req *qv1.ListAccessKeysRequest) (*qv1.ListAccessKeysResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).ListAccessKeys)
	}
	if _, _, err := shardserver.KeyTenant(ctx, req.GetTenant()); err != nil {
		return nil, err
	}
	return call(ctx, c.router, target{shard: MetadataShard}, credentialsMethod+"ListAccessKeys", req, (*shardserver.Server).ListAccessKeys)
}

// RevokeAccessKey implements CredentialsService.
func (c *CredentialsServer) RevokeAccessKey(ctx context.Context, req *qv1.RevokeAccessKeyRequest) (*qv1.RevokeAccessKeyResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, c.router, sh, req, (*shardserver.Server).RevokeAccessKey)
	}
	if _, _, err := shardserver.KeyTenant(ctx, req.GetTenant()); err != nil {
		return nil, err
	}
	resp, err := call(ctx, c.router, target{shard: MetadataShard}, credentialsMethod+"RevokeAccessKey", req, (*shardserver.Server).RevokeAccessKey)
	if err == nil && c.keys != nil {
		c.keys.Forget(req.GetAccessKeyId())
	}
	return resp, err
}

// accessKeyGrant asks the metadata shard's leader, here or on another
// node, for a key's grant. A NOT_LEADER answer is retried (at most three
// tries, within the router's timeout).
func (r *Router) accessKeyGrant(ctx context.Context, req *storepb.AccessKeyLookup) (*storepb.AccessKeyGrant, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var err error
	for range 3 {
		var leader uint64
		if leader, err = r.leaderOf(ctx, MetadataShard); err != nil {
			return nil, err
		}
		if srv := r.localServer(MetadataShard); srv != nil && leader == r.cfg.Self {
			var out *storepb.AccessKeyGrant
			out, err = srv.AccessKeyGrant(ctx, req)
			err = server.ToStatus(err)
			if err == nil {
				return out, nil
			}
		} else if r.cfg.Forwarder == nil {
			return nil, fmt.Errorf("no route to shard %d", MetadataShard)
		} else {
			out := &storepb.AccessKeyGrant{}
			err = r.cfg.Forwarder.invoke(ctx, leader, peerAccessKeyMethod, req, out, server.ShardHeader, fmt.Sprint(MetadataShard))
			if err == nil {
				return out, nil
			}
		}
		if server.ReasonOf(err) == server.ReasonAccessKeyNotFound {
			return nil, fmt.Errorf("%w: %s", shardserver.ErrUnknownAccessKey, req.GetAccessKeyId())
		}
		hint, ok := retryable(err)
		if !ok {
			return nil, err
		}
		if hint != 0 {
			r.cfg.View.Hint(MetadataShard, hint)
		}
	}
	return nil, err
}

// accessKeyGrant serves peerAccessKeyMethod on the shard the call names,
// which this node must lead.
func (p *PeerServer) accessKeyGrant(ctx context.Context, req *storepb.AccessKeyLookup) (*storepb.AccessKeyGrant, error) {
	srv, err := p.addressed(ctx)
	if err != nil {
		return nil, err
	}
	out, err := srv.AccessKeyGrant(ctx, req)
	return out, server.ToStatus(err)
}
