package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// clientFlags are shared by the client subcommands.
type clientFlags struct {
	endpoint string
	timeout  time.Duration
	token    string
	caFile   string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.endpoint, "endpoint", "127.0.0.1:9090", "gRPC address of any node")
	cmd.Flags().DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of the call")
	cmd.Flags().StringVar(&c.token, "token", "", "bearer token (JWT); also QUORUMQ_TOKEN")
	cmd.Flags().StringVar(&c.caFile, "ca-file", "", "CA (PEM) to verify the server's TLS certificate; empty: plain TCP")
}

// dialOptions are the transport credentials the flags ask for.
func (c *clientFlags) dialOptions() ([]grpc.DialOption, error) {
	if c.caFile == "" {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	creds, err := credentials.NewClientTLSFromFile(c.caFile, "")
	if err != nil {
		return nil, fmt.Errorf("--ca-file: %w", err)
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(creds)}, nil
}

// rpc dials the endpoint and runs fn under the call deadline; a gRPC
// error comes back as "Code: message".
func (c *clientFlags) rpc(cmd *cobra.Command, fn func(ctx context.Context, conn *grpc.ClientConn) error) error {
	opts, err := c.dialOptions()
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(c.endpoint, opts...)
	if err != nil {
		return fmt.Errorf("dial %s: %w", c.endpoint, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), c.timeout)
	defer cancel()
	if c.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	}
	if err := fn(ctx, conn); err != nil {
		if st, ok := status.FromError(err); ok {
			return fmt.Errorf("%s: %s", st.Code(), st.Message())
		}
		return err
	}
	return nil
}

// call runs fn with a QueueService client and prints its answer as JSON.
func (c *clientFlags) call(cmd *cobra.Command, fn func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error)) error {
	return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := fn(ctx, qv1.NewQueueServiceClient(conn))
		if err != nil {
			return err
		}
		return printJSON(cmd.OutOrStdout(), resp)
	})
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func durationOrNil(d time.Duration, set bool) *durationpb.Duration {
	if !set {
		return nil
	}
	return durationpb.New(d)
}

func newQueueCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "queue", Short: "Manage queues"}
	cmd.AddCommand(newQueueCreateCmd(), newQueueGetCmd(), newQueueListCmd(), newQueueDeleteCmd(), newQueuePurgeCmd(), newQueueRedriveCmd())
	return cmd
}

func newQueueCreateCmd() *cobra.Command {
	var (
		c                           clientFlags
		vis, retention, delay, wait time.Duration
		maxSize                     int64
		dlq                         string
		maxReceives                 int32
		fifo, contentDedup          bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a queue (same attributes again: returns it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			attrs := &qv1.QueueAttributes{
				VisibilityTimeout:         durationOrNil(vis, f.Changed("visibility-timeout")),
				MessageRetention:          durationOrNil(retention, f.Changed("retention")),
				DeliveryDelay:             durationOrNil(delay, f.Changed("delay")),
				ReceiveWait:               durationOrNil(wait, f.Changed("receive-wait")),
				MaxMessageSize:            maxSize,
				Fifo:                      fifo,
				ContentBasedDeduplication: contentDedup,
			}
			if dlq != "" {
				attrs.DeadLetter = &qv1.DeadLetterPolicy{Queue: dlq, MaxReceiveCount: maxReceives}
			}
			return c.call(cmd, func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error) {
				r, err := q.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: args[0], Attributes: attrs})
				return r.GetQueue(), err
			})
		},
	}
	c.register(cmd)
	f := cmd.Flags()
	f.DurationVar(&vis, "visibility-timeout", 0, "lease of received messages (default 30s)")
	f.DurationVar(&retention, "retention", 0, "message retention (default 96h)")
	f.DurationVar(&delay, "delay", 0, "delivery delay of every message (default 0)")
	f.DurationVar(&wait, "receive-wait", 0, "default long-poll wait (default 0)")
	f.Int64Var(&maxSize, "max-message-size", 0, "bytes (default 1 MiB)")
	f.StringVar(&dlq, "dead-letter-queue", "", "dead-letter queue name")
	f.Int32Var(&maxReceives, "max-receive-count", 5, "receives before dead-lettering")
	f.BoolVar(&fifo, "fifo", false, "FIFO queue (name must end in .fifo)")
	f.BoolVar(&contentDedup, "content-based-deduplication", false, "FIFO: deduplicate by body hash")
	return cmd
}

func newQueueGetCmd() *cobra.Command {
	var c clientFlags
	cmd := &cobra.Command{
		Use: "get NAME", Short: "Show a queue with its message counts", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error) {
				r, err := q.GetQueue(ctx, &qv1.GetQueueRequest{Name: args[0]})
				return r.GetQueue(), err
			})
		},
	}
	c.register(cmd)
	return cmd
}

func newQueueListCmd() *cobra.Command {
	var (
		c      clientFlags
		prefix string
		size   int32
		token  string
	)
	cmd := &cobra.Command{
		Use: "list", Short: "List queues", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.call(cmd, func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error) {
				return q.ListQueues(ctx, &qv1.ListQueuesRequest{Prefix: prefix, PageSize: size, PageToken: token})
			})
		},
	}
	c.register(cmd)
	cmd.Flags().StringVar(&prefix, "prefix", "", "only names with this prefix")
	cmd.Flags().Int32Var(&size, "page-size", 0, "queues per page (default 100)")
	cmd.Flags().StringVar(&token, "page-token", "", "next page token of a previous list")
	return cmd
}

func newQueueDeleteCmd() *cobra.Command {
	var c clientFlags
	cmd := &cobra.Command{
		Use: "delete NAME", Short: "Delete a queue and its messages", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error) {
				return q.DeleteQueue(ctx, &qv1.DeleteQueueRequest{Name: args[0]})
			})
		},
	}
	c.register(cmd)
	return cmd
}

func newQueuePurgeCmd() *cobra.Command {
	var c clientFlags
	cmd := &cobra.Command{
		Use: "purge NAME", Short: "Remove every message of a queue", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error) {
				return q.PurgeQueue(ctx, &qv1.PurgeQueueRequest{Name: args[0]})
			})
		},
	}
	c.register(cmd)
	return cmd
}

func newSendCmd() *cobra.Command {
	var (
		c     clientFlags
		body  string
		tags  []string
		attrs map[string]string
		delay time.Duration
		group string
		key   string
	)
	cmd := &cobra.Command{
		Use:   "send QUEUE [BODY]",
		Short: "Send a message (body from the argument, --body, or standard input)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				body = args[1]
			} else if !cmd.Flags().Changed("body") {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20+1))
				if err != nil {
					return err
				}
				body = strings.TrimSuffix(string(b), "\n")
			}
			req := &qv1.SendMessageRequest{
				Queue: args[0], Body: body, Tags: tags, Attributes: attrs,
				Delay: durationOrNil(delay, cmd.Flags().Changed("delay")), GroupId: group, IdempotencyKey: key,
			}
			return c.call(cmd, func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error) {
				return q.SendMessage(ctx, req)
			})
		},
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringVar(&body, "body", "", "message body")
	f.StringSliceVar(&tags, "tag", nil, "tag (repeat or comma-separate)")
	f.StringToStringVar(&attrs, "attr", nil, "attribute key=value (repeatable)")
	f.DurationVar(&delay, "delay", 0, "deliver after this delay")
	f.StringVar(&group, "group-id", "", "FIFO group")
	f.StringVar(&key, "idempotency-key", "", "retry-safe key")
	return cmd
}

func newReceiveCmd() *cobra.Command {
	var (
		c         clientFlags
		max       int32
		vis, wait time.Duration
		all, any  []string
		none      []string
	)
	cmd := &cobra.Command{
		Use: "receive QUEUE", Short: "Receive (lease) messages", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &qv1.ReceiveMessagesRequest{
				Queue: args[0], MaxMessages: max,
				VisibilityTimeout: durationOrNil(vis, cmd.Flags().Changed("visibility-timeout")),
				WaitTime:          durationOrNil(wait, cmd.Flags().Changed("wait")),
			}
			if len(all)+len(any)+len(none) > 0 {
				req.TagFilter = &qv1.TagFilter{All: all, Any: any, None: none}
			}
			return c.call(cmd, func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error) {
				return q.ReceiveMessages(ctx, req)
			})
		},
	}
	c.register(cmd)
	f := cmd.Flags()
	f.Int32Var(&max, "max", 1, "messages to receive, 1 to 100")
	f.DurationVar(&vis, "visibility-timeout", 0, "lease (default: the queue's)")
	f.DurationVar(&wait, "wait", 0, "long-poll up to this long (max 20s)")
	f.StringSliceVar(&all, "all", nil, "only messages with all these tags")
	f.StringSliceVar(&any, "any", nil, "only messages with one of these tags")
	f.StringSliceVar(&none, "none", nil, "only messages with none of these tags")
	return cmd
}

func newDeleteCmd() *cobra.Command {
	var c clientFlags
	cmd := &cobra.Command{
		Use: "delete QUEUE RECEIPT_HANDLE", Short: "Delete a received message", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.call(cmd, func(ctx context.Context, q qv1.QueueServiceClient) (proto.Message, error) {
				return q.DeleteMessage(ctx, &qv1.DeleteMessageRequest{Queue: args[0], ReceiptHandle: args[1]})
			})
		},
	}
	c.register(cmd)
	return cmd
}
