package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/metadata"

	"github.com/quorumq/quorumq/server/auth"
)

// newTokenCmd mints an HS256 development token. Production tokens come
// from an identity provider; this exists so that a secured dev or test
// cluster can be called without one.
func newTokenCmd() *cobra.Command {
	var (
		tenant, scope, secretFile, issuer, audience string
		ttl                                         time.Duration
	)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Print a signed HS256 JWT for development (tenant, scopes, TTL)",
		Example: `  quorumq token --tenant acme --scope "queues:admin messages:send" --ttl 1h --hs256-secret-file secret
  curl -H "Authorization: Bearer $(quorumq token --tenant acme --scope queues:admin --hs256-secret-file secret)" http://127.0.0.1:8080/v1/queues`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if secretFile == "" {
				return errors.New("--hs256-secret-file is required")
			}
			if ttl <= 0 {
				return fmt.Errorf("--ttl %v: must be positive", ttl)
			}
			secret, err := auth.LoadHS256Secret(secretFile)
			if err != nil {
				return fmt.Errorf("--hs256-secret-file: %w", err)
			}
			_, unknown := auth.ParseScopes(scope)
			for _, s := range unknown {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: scope %q is unknown; the server ignores it\n", s)
			}
			now := time.Now()
			claims := jwt.MapClaims{
				"tenant": tenant,
				"scope":  scope,
				"iat":    now.Unix(),
				"exp":    now.Add(ttl).Unix(),
			}
			if issuer != "" {
				claims["iss"] = issuer
			}
			if audience != "" {
				claims["aud"] = audience
			}
			tok, err := auth.Mint("HS256", secret, "", claims)
			if err != nil {
				return err
			}
			if err := selfCheck(tok, secretFile, issuer, audience, now); err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&tenant, "tenant", "", "tenant claim (1-64 of [A-Za-z0-9_.-])")
	f.StringVar(&scope, "scope", "", `space-separated scopes, e.g. "queues:admin messages:send messages:receive cluster:admin"`)
	f.DurationVar(&ttl, "ttl", time.Hour, "lifetime of the token (exp = now + ttl)")
	f.StringVar(&secretFile, "hs256-secret-file", "", "HS256 secret file, the same one the server is given")
	f.StringVar(&issuer, "issuer", "", "iss claim (must match the server's --auth-issuer if set)")
	f.StringVar(&audience, "audience", "", "aud claim (must match the server's --auth-audience if set)")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

// selfCheck verifies tok exactly as a server with the same secret, issuer
// and audience would, so the command never prints a token that server
// would refuse (a bad tenant, for one).
func selfCheck(tok, secretFile, issuer, audience string, now time.Time) error {
	a, err := auth.New(auth.Config{
		HS256SecretFile: secretFile,
		Issuer:          issuer,
		Audience:        audience,
		ReloadInterval:  -1,
		Now:             func() time.Time { return now },
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		return err
	}
	defer a.Close()
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	if _, err := a.Authenticate(ctx); err != nil {
		return fmt.Errorf("the minted token would be refused: %w", err)
	}
	return nil
}
