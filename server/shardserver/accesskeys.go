package shardserver

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// Access keys sign requests to the SQS endpoint (AWS SigV4). They are
// replicated state of the metadata shard (store/accesskeys.go). This file
// is the metadata shard leader's side: create, list and revoke for
// CredentialsService, and the lookup that answers the SigV4 verifiers of
// every node (accesskeys_cache.go) with a signing key, never the secret.

// ErrUnknownAccessKey: no access key of that id exists (or it was
// revoked). The SigV4 verifier answers InvalidClientTokenId.
var ErrUnknownAccessKey = errors.New("unknown access key")

// keyScopes are the scopes an access key may grant: what the SQS actions
// need. Never cluster:admin: the SQS endpoint administers no cluster.
var keyScopes = []string{server.ScopeQueuesAdmin, server.ScopeMessagesSend, server.ScopeMessagesReceive, server.ScopeMessagesPeek}

// defaultKeyScopes are granted when CreateAccessKey names none (those the
// caller holds).
var defaultKeyScopes = []string{server.ScopeQueuesAdmin, server.ScopeMessagesSend, server.ScopeMessagesReceive}

// sqsService is the only SigV4 service whose signing keys are handed out.
const sqsService = "sqs"

const (
	accessKeyIDPrefix  = "AKQQ"
	maxKeyDescription  = 256
	maxSigV4ScopeField = 128
)

// tenantPattern is the form of a tenant that server/auth accepts in a
// token; a key's tenant is also the account in SQS queue URLs.
var tenantPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// KeyTenant authorizes managing the access keys of tenant (empty: the
// caller's own) and returns the tenant and the caller. cluster:admin may
// manage any tenant's keys; queues:admin only its own tenant's.
func KeyTenant(ctx context.Context, tenant string) (string, *server.Principal, error) {
	p := server.PrincipalFrom(ctx)
	if p == nil {
		return "", nil, server.StatusError(codes.Unauthenticated, server.ReasonUnauthenticated, "no credentials", nil)
	}
	switch {
	case p.Scopes[server.ScopeClusterAdmin]:
	case p.Scopes[server.ScopeQueuesAdmin]:
		if tenant != "" && tenant != p.Tenant {
			return "", nil, server.StatusError(codes.PermissionDenied, server.ReasonPermissionDenied,
				"queues:admin manages the access keys of its own tenant only (cluster:admin: any tenant)", nil)
		}
	default:
		return "", nil, server.StatusError(codes.PermissionDenied, server.ReasonPermissionDenied, fmt.Sprintf("token lacks scope %v", []string{server.ScopeClusterAdmin, server.ScopeQueuesAdmin}), nil)
	}
	if tenant == "" {
		tenant = p.Tenant
	}
	if !tenantPattern.MatchString(tenant) {
		return "", nil, server.FieldError("tenant", "must be 1-64 characters of [A-Za-z0-9_.-] (the JWT tenant claim's form)")
	}
	return tenant, p, nil
}

// grantableScopes checks the scopes a new key asks for: known key scopes,
// and (unless the caller is cluster:admin) held by the caller, so that a
// key never grants more than its maker holds. It returns them sorted and
// without repeats; none asked: the defaults the caller holds.
func grantableScopes(p *server.Principal, asked []string) ([]string, error) {
	admin := p.Scopes[server.ScopeClusterAdmin]
	if len(asked) == 0 {
		var out []string
		for _, s := range defaultKeyScopes {
			if admin || p.Scopes[s] {
				out = append(out, s)
			}
		}
		slices.Sort(out)
		return out, nil
	}
	if len(asked) > len(keyScopes) {
		return nil, server.FieldError("scopes", fmt.Sprintf("at most %d scopes", len(keyScopes)))
	}
	out := make([]string, 0, len(asked))
	for _, s := range asked {
		if !slices.Contains(keyScopes, s) {
			return nil, server.FieldError("scopes", fmt.Sprintf("%q is not a scope an access key may grant (%v)", s, keyScopes))
		}
		if !admin && !p.Scopes[s] {
			return nil, server.StatusError(codes.PermissionDenied, server.ReasonPermissionDenied, fmt.Sprintf("cannot grant %q: the caller does not hold it", s), nil)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// newAccessKeyID draws an id like AWS's: 4 letters and 16 base32
// characters (80 random bits).
func newAccessKeyID() (string, error) {
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("access key id: %w", err)
	}
	return accessKeyIDPrefix + base32.StdEncoding.EncodeToString(b), nil
}

// newSecretAccessKey draws a 40-character secret (240 random bits).
func newSecretAccessKey() (string, error) {
	b := make([]byte, 30)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("secret access key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// accessKeyErr maps the store's access key outcomes to statuses.
func accessKeyErr(err error, id string) error {
	switch {
	case errors.Is(err, store.ErrAccessKeyNotFound):
		return server.StatusError(codes.NotFound, server.ReasonAccessKeyNotFound, fmt.Sprintf("access key not found: %s", id), nil)
	case errors.Is(err, store.ErrAccessKeyExists):
		return server.StatusError(codes.Aborted, server.ReasonInternal, "access key id drawn twice; retry", nil)
	}
	return err
}

func accessKeyToAPI(r *storepb.AccessKeyRecord) *qv1.AccessKey {
	k := &qv1.AccessKey{AccessKeyId: r.GetAccessKeyId(), Tenant: r.GetTenant(), Scopes: r.GetScopes(), Description: r.GetDescription()}
	if r.GetCreatedAtMs() > 0 {
		k.CreateTime = timestamppb.New(time.UnixMilli(r.GetCreatedAtMs()))
	}
	return k
}

// CreateAccessKey makes a key on the metadata shard (CredentialsService).
func (s *Server) CreateAccessKey(ctx context.Context, req *qv1.CreateAccessKeyRequest) (*qv1.CreateAccessKeyResponse, error) {
	tenant, p, err := KeyTenant(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	scopes, err := grantableScopes(p, req.GetScopes())
	if err != nil {
		return nil, err
	}
	if len(scopes) == 0 {
		return nil, server.FieldError("scopes", "the caller holds none of the default scopes; name the scopes")
	}
	if err := CheckText("description", req.GetDescription(), 0, maxKeyDescription); err != nil {
		return nil, err
	}
	id, err := newAccessKeyID()
	if err != nil {
		return nil, err
	}
	secret, err := newSecretAccessKey()
	if err != nil {
		return nil, err
	}
	rec := &storepb.AccessKeyRecord{AccessKeyId: id, Tenant: tenant, SecretAccessKey: secret, Scopes: scopes,
		CreatedAtMs: s.cfg.Now().UnixMilli(), Description: req.GetDescription()}
	// propose returns the outcome (res.Err) as its error.
	if _, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_PutAccessKey{PutAccessKey: &storepb.PutAccessKey{Key: rec}}}); err != nil {
		return nil, accessKeyErr(err, id)
	}
	return &qv1.CreateAccessKeyResponse{AccessKey: accessKeyToAPI(rec), SecretAccessKey: secret}, nil
}

// ListAccessKeys lists a tenant's keys without secrets (CredentialsService).
func (s *Server) ListAccessKeys(ctx context.Context, req *qv1.ListAccessKeysRequest) (*qv1.ListAccessKeysResponse, error) {
	tenant, _, err := KeyTenant(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	recs, err := s.store.AccessKeys(tenant)
	if err != nil {
		return nil, err
	}
	out := &qv1.ListAccessKeysResponse{AccessKeys: make([]*qv1.AccessKey, 0, len(recs))}
	for _, r := range recs {
		out.AccessKeys = append(out.AccessKeys, accessKeyToAPI(r))
	}
	return out, nil
}

// RevokeAccessKey deletes a key of the tenant (CredentialsService).
func (s *Server) RevokeAccessKey(ctx context.Context, req *qv1.RevokeAccessKeyRequest) (*qv1.RevokeAccessKeyResponse, error) {
	tenant, _, err := KeyTenant(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	if err := CheckText("access_key_id", req.GetAccessKeyId(), 1, 128); err != nil {
		return nil, err
	}
	if _, err := s.propose(ctx, &storepb.Command{Op: &storepb.Command_RevokeAccessKey{RevokeAccessKey: &storepb.RevokeAccessKey{
		Tenant: tenant, AccessKeyId: req.GetAccessKeyId()}}}); err != nil {
		return nil, accessKeyErr(err, req.GetAccessKeyId())
	}
	return &qv1.RevokeAccessKeyResponse{}, nil
}

// AccessKeyGrant answers a verifier's lookup after a read barrier, so a
// key revoked before the lookup began is never granted: the tenant, the
// scopes and the signing key of the asked credential scope.
func (s *Server) AccessKeyGrant(ctx context.Context, req *storepb.AccessKeyLookup) (*storepb.AccessKeyGrant, error) {
	if err := checkLookup(req); err != nil {
		return nil, err
	}
	if err := s.readBarrier(ctx); err != nil {
		return nil, err
	}
	rec, err := s.store.AccessKey(req.GetAccessKeyId())
	if err != nil {
		return nil, accessKeyErr(err, req.GetAccessKeyId())
	}
	return &storepb.AccessKeyGrant{Tenant: rec.GetTenant(), Scopes: rec.GetScopes(),
		SigningKey: SigningKey(rec.GetSecretAccessKey(), req.GetDate(), req.GetRegion(), req.GetService())}, nil
}

func checkLookup(req *storepb.AccessKeyLookup) error {
	d := req.GetDate()
	if len(d) != 8 || !isDigits(d) {
		return server.FieldError("date", "must be YYYYMMDD")
	}
	if req.GetService() != sqsService {
		return server.FieldError("service", "only sqs keys are handed out")
	}
	if err := CheckText("access_key_id", req.GetAccessKeyId(), 1, maxSigV4ScopeField); err != nil {
		return err
	}
	return CheckText("region", req.GetRegion(), 1, maxSigV4ScopeField)
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// SigningKey derives the SigV4 signing key of a secret for one credential
// scope: HMAC chains over "AWS4"+secret, date, region, service and
// "aws4_request". It signs only requests of that day, region and service.
func SigningKey(secret, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
