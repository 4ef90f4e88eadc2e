package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// quorumq credentials: the SigV4 access keys of the SQS endpoint
// (CredentialsService).
func newCredentialsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credentials",
		Short: "Manage the access keys that sign requests to the SQS endpoint",
		Long: clientLong(`Manage access keys for the SQS-compatible endpoint (AWS Signature
Version 4). A key acts as one tenant with the scopes it was given. A
cluster:admin token manages any tenant's keys; a queues:admin token only
its own tenant's, granting only scopes it holds.`),
	}
	cmd.AddCommand(newCredentialsCreateCmd(), newCredentialsListCmd(), newCredentialsRevokeCmd())
	return cmd
}

func newCredentialsCreateCmd() *cobra.Command {
	var c clientCmd
	var tenant, description string
	var scopes []string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Make an access key; prints its secret, once",
		Long: clientLong(`Make an access key of --tenant (default: the token's tenant) with the
given --scope values (default: those of queues:admin, messages:send and
messages:receive the caller holds). The secret access key is printed
now and never again, as shell lines setting AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (eval "$(quorumq credentials create …)"), or with
-o json as the CreateAccessKey response.`),
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := qv1.NewCredentialsServiceClient(conn).CreateAccessKey(ctx, &qv1.CreateAccessKeyRequest{
					Tenant: tenant, Scopes: scopes, Description: description})
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r)
				}
				// Shell lines the AWS SDKs and CLI read; the rest goes to
				// stderr so that eval "$(quorumq credentials create …)" works.
				k := r.GetAccessKey()
				if _, err := fmt.Fprintf(cmd.OutOrStdout(), "export AWS_ACCESS_KEY_ID=%s\nexport AWS_SECRET_ACCESS_KEY='%s'\n",
					k.GetAccessKeyId(), r.GetSecretAccessKey()); err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.ErrOrStderr(), "access key %s of tenant %s (%s); the secret is shown only now: store it\n",
					k.GetAccessKeyId(), k.GetTenant(), strings.Join(k.GetScopes(), " "))
				return err
			})
		}),
	}
	c.register(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant the key acts as (default: the token's tenant)")
	cmd.Flags().StringArrayVar(&scopes, "scope", nil, "scope the key grants (repeatable): queues:admin, messages:send, messages:receive, messages:peek")
	cmd.Flags().StringVar(&description, "description", "", "free text shown by list (up to 256 bytes)")
	return cmd
}

func newCredentialsListCmd() *cobra.Command {
	var c clientCmd
	var tenant string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List a tenant's access keys (never their secrets)",
		Long:  clientLong(`List the access keys of --tenant (default: the token's tenant), in id order.`),
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := qv1.NewCredentialsServiceClient(conn).ListAccessKeys(ctx, &qv1.ListAccessKeysRequest{Tenant: tenant})
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 2, 2, ' ', 0)
				fmt.Fprintf(w, "ACCESS KEY ID\tTENANT\tSCOPES\tCREATED\tDESCRIPTION\n")
				for _, k := range r.GetAccessKeys() {
					created := ""
					if k.GetCreateTime() != nil {
						created = k.GetCreateTime().AsTime().UTC().Format(time.RFC3339)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.GetAccessKeyId(), k.GetTenant(), strings.Join(k.GetScopes(), " "), created, k.GetDescription())
				}
				return w.Flush()
			})
		}),
	}
	c.register(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant whose keys to list (default: the token's tenant)")
	return cmd
}

func newCredentialsRevokeCmd() *cobra.Command {
	var c clientCmd
	var tenant string
	cmd := &cobra.Command{
		Use:   "revoke ACCESS_KEY_ID",
		Short: "Delete an access key",
		Long: clientLong(`Delete an access key of --tenant (default: the token's tenant). Requests
signed with it are refused (InvalidClientTokenId) by every node within 5
seconds, at once by the node that served the revoke.`),
		Args: cobra.ExactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
				r, err := qv1.NewCredentialsServiceClient(conn).RevokeAccessKey(ctx, &qv1.RevokeAccessKeyRequest{Tenant: tenant, AccessKeyId: args[0]})
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r)
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "revoked access key %s\n", args[0])
				return err
			})
		}),
	}
	c.register(cmd)
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant the key belongs to (default: the token's tenant)")
	return cmd
}
