package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
)

// quorumq topic: publish/subscribe (TopicService).
func newTopicCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Manage topics, publish, subscribe queues and read with consumer groups",
		Long: clientLong(`Topics store each published message once, in a partition log with an
offset. Subscribed queues get a copy of every matching message (exactly
once); consumer groups read the log in offset order, commit their
position and can replay from a time.`),
	}
	cmd.AddCommand(newTopicCreateCmd(), newTopicGetCmd(), newTopicListCmd(), newTopicDeleteCmd(), newTopicPublishCmd(),
		newTopicSubscribeCmd(), newTopicUnsubscribeCmd(), newTopicGroupCmd(), newTopicReadCmd(), newTopicConsumeCmd())
	return cmd
}

// topicRPC runs fn with a TopicService client.
func (c *clientCmd) topicRPC(cmd *cobra.Command, fn func(ctx context.Context, tc qv1.TopicServiceClient) error) error {
	return c.rpc(cmd, func(ctx context.Context, conn *grpc.ClientConn) error {
		return fn(ctx, qv1.NewTopicServiceClient(conn))
	})
}

func printTopic(w io.Writer, t *qv1.Topic, stats bool) error {
	a := t.GetAttributes()
	line := fmt.Sprintf("%s\tpartitions=%d retention=%s max-message-size=%d", t.GetName(), a.GetPartitions(),
		a.GetRetention().AsDuration(), a.GetMaxMessageSize())
	if b := a.GetRetentionBytes(); b > 0 {
		line += fmt.Sprintf(" retention-bytes=%d", b)
	}
	if stats {
		line += fmt.Sprintf(" bytes=%d", t.GetBytes())
	}
	for _, s := range t.GetSubscriptions() {
		line += " subscription=" + s.GetQueue()
		if f := s.GetTagFilter(); f != nil {
			line += fmt.Sprintf("[all:%s any:%s none:%s]", strings.Join(f.GetAll(), ","), strings.Join(f.GetAny(), ","), strings.Join(f.GetNone(), ","))
		}
	}
	if _, err := fmt.Fprintln(w, line); err != nil {
		return err
	}
	for _, p := range t.GetPartitions() {
		if _, err := fmt.Fprintf(w, "  partition %d: offsets %d-%d, %d messages, %d bytes\n", p.GetPartition(), p.GetStartOffset(),
			p.GetEndOffset(), p.GetMessages(), p.GetBytes()); err != nil {
			return err
		}
	}
	return nil
}

func newTopicCreateCmd() *cobra.Command {
	var c clientCmd
	var a struct {
		partitions     int32
		retention      time.Duration
		retentionBytes int64
		maxSize        int64
	}
	cmd := &cobra.Command{
		Use: "create NAME", Short: "Create a topic (same attributes again: returns it)", Args: cobra.ExactArgs(1),
		Long: clientLong("Create a topic and print it. Unset attributes take the server's defaults."),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.topicRPC(cmd, func(ctx context.Context, tc qv1.TopicServiceClient) error {
				attrs := &qv1.TopicAttributes{Partitions: a.partitions, RetentionBytes: a.retentionBytes, MaxMessageSize: a.maxSize}
				if a.retention > 0 {
					attrs.Retention = durationpb.New(a.retention)
				}
				r, err := tc.CreateTopic(ctx, &qv1.CreateTopicRequest{Name: args[0], Attributes: attrs})
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r.GetTopic())
				}
				return printTopic(cmd.OutOrStdout(), r.GetTopic(), false)
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.Int32Var(&a.partitions, "partitions", 0, "partitions, 1 to 64 (default 1)")
	f.DurationVar(&a.retention, "retention", 0, "message retention, 60s to 336h (default 168h)")
	f.Int64Var(&a.retentionBytes, "retention-bytes", 0, "per partition: drop the oldest segments past this many bytes (0: no bound)")
	f.Int64Var(&a.maxSize, "max-message-size", 0, "bytes (default 1 MiB)")
	return cmd
}

func newTopicGetCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use: "get NAME", Short: "Show a topic with its partitions' offsets and bytes", Args: cobra.ExactArgs(1),
		Long: clientLong("Show a topic: attributes, subscriptions, and per partition its retained offsets and bytes."),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.topicRPC(cmd, func(ctx context.Context, tc qv1.TopicServiceClient) error {
				r, err := tc.GetTopic(ctx, &qv1.GetTopicRequest{Name: args[0]})
				if err != nil {
					return err
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r.GetTopic())
				}
				return printTopic(cmd.OutOrStdout(), r.GetTopic(), true)
			})
		}),
	}
	c.register(cmd)
	return cmd
}

func newTopicListCmd() *cobra.Command {
	var c clientCmd
	var prefix string
	cmd := &cobra.Command{
		Use: "list", Short: "List topics", Args: cobra.NoArgs,
		Long: clientLong("List the topics (every page), in name order."),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return c.topicRPC(cmd, func(ctx context.Context, tc qv1.TopicServiceClient) error {
				all := &qv1.ListTopicsResponse{}
				token := ""
				for {
					r, err := tc.ListTopics(ctx, &qv1.ListTopicsRequest{Prefix: prefix, PageToken: token})
					if err != nil {
						return err
					}
					all.Topics = append(all.Topics, r.GetTopics()...)
					if token = r.GetNextPageToken(); token == "" {
						break
					}
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), all)
				}
				if len(all.Topics) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no topics")
				}
				for _, t := range all.Topics {
					if err := printTopic(cmd.OutOrStdout(), t, false); err != nil {
						return err
					}
				}
				return nil
			})
		}),
	}
	c.register(cmd)
	cmd.Flags().StringVar(&prefix, "prefix", "", "only names starting with this")
	return cmd
}

func newTopicDeleteCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use: "delete NAME", Short: "Delete a topic, its logs and groups", Args: cobra.ExactArgs(1),
		Long: clientLong("Delete a topic with its partition logs and consumer groups."),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.topicRPC(cmd, func(ctx context.Context, tc qv1.TopicServiceClient) error {
				r, err := tc.DeleteTopic(ctx, &qv1.DeleteTopicRequest{Name: args[0]})
				if err != nil {
					return err
				}
				return c.done(cmd, r, "deleted topic "+args[0])
			})
		}),
	}
	c.register(cmd)
	return cmd
}

func newTopicPublishCmd() *cobra.Command {
	var c clientCmd
	var req qv1.PublishRequest
	cmd := &cobra.Command{
		Use: "publish TOPIC BODY", Short: "Publish a message", Args: cobra.ExactArgs(2),
		Long: clientLong(`Publish a message and print its id, partition and offset. Messages with
the same --key go to the same partition, in order.`),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.topicRPC(cmd, func(ctx context.Context, tc qv1.TopicServiceClient) error {
				r := proto.Clone(&req).(*qv1.PublishRequest)
				r.Topic, r.Body = args[0], args[1]
				resp, err := tc.Publish(ctx, r)
				if err != nil {
					return err
				}
				return c.done(cmd, resp, fmt.Sprintf("%s partition=%d offset=%d", resp.GetMessageId(), resp.GetPartition(), resp.GetOffset()))
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringVar(&req.PartitionKey, "key", "", "partition key (order per key; a FIFO subscriber's group)")
	f.StringArrayVar(&req.Tags, "tag", nil, "tag (repeatable)")
	f.StringToStringVar(&req.Attributes, "attribute", nil, "attribute key=value (repeatable)")
	f.StringVar(&req.IdempotencyKey, "idempotency-key", "", "a retry with the same key within 5 minutes returns the first result")
	return cmd
}

func newTopicSubscribeCmd() *cobra.Command {
	var c clientCmd
	var all, anyOf, none []string
	cmd := &cobra.Command{
		Use: "subscribe TOPIC QUEUE", Short: "Copy the topic's matching messages into a queue", Args: cobra.ExactArgs(2),
		Long: clientLong(`Subscribe a queue: every message published from now on that matches the
tag filter (--all, --any, --none) is delivered into it exactly once.`),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.topicRPC(cmd, func(ctx context.Context, tc qv1.TopicServiceClient) error {
				req := &qv1.SubscribeRequest{Topic: args[0], Queue: args[1]}
				if len(all)+len(anyOf)+len(none) > 0 {
					req.TagFilter = &qv1.TagFilter{All: all, Any: anyOf, None: none}
				}
				r, err := tc.Subscribe(ctx, req)
				if err != nil {
					return err
				}
				return c.done(cmd, r.GetSubscription(), fmt.Sprintf("subscribed queue %s to topic %s", args[1], args[0]))
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&all, "all", nil, "tag every message must have (repeatable)")
	f.StringArrayVar(&anyOf, "any", nil, "tags of which a message must have one (repeatable)")
	f.StringArrayVar(&none, "none", nil, "tag no message may have (repeatable)")
	return cmd
}

func newTopicUnsubscribeCmd() *cobra.Command {
	var c clientCmd
	cmd := &cobra.Command{
		Use: "unsubscribe TOPIC QUEUE", Short: "Stop copying into a queue", Args: cobra.ExactArgs(2),
		Long: clientLong("Unsubscribe a queue from a topic."),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.topicRPC(cmd, func(ctx context.Context, tc qv1.TopicServiceClient) error {
				r, err := tc.Unsubscribe(ctx, &qv1.UnsubscribeRequest{Topic: args[0], Queue: args[1]})
				if err != nil {
					return err
				}
				return c.done(cmd, r, fmt.Sprintf("unsubscribed queue %s from topic %s", args[1], args[0]))
			})
		}),
	}
	c.register(cmd)
	return cmd
}

// parseStart reads --start: earliest, latest or an RFC 3339 time.
func parseStart(s string) (qv1.GroupStart, *timestamppb.Timestamp, error) {
	switch s {
	case "", "earliest":
		return qv1.GroupStart_GROUP_START_EARLIEST, nil, nil
	case "latest":
		return qv1.GroupStart_GROUP_START_LATEST, nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, nil, fmt.Errorf("--start %q: want earliest, latest or an RFC 3339 time", s)
	}
	return qv1.GroupStart_GROUP_START_TIME, timestamppb.New(t), nil
}

func printGroup(w io.Writer, g *qv1.Group) error {
	for _, p := range g.GetPartitions() {
		if _, err := fmt.Fprintf(w, "%s/%s partition %d: committed %d, lag %d\n", g.GetTopic(), g.GetName(), p.GetPartition(),
			p.GetCommittedOffset(), p.GetLag()); err != nil {
			return err
		}
	}
	return nil
}

func newTopicGroupCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "group", Short: "Manage consumer groups", Long: clientLong("Create, show, reset (replay) and delete consumer groups.")}
	var start string
	groupCmd := func(use, short string, run func(ctx context.Context, tc qv1.TopicServiceClient, topic, group string) (*qv1.Group, proto.Message, error)) *cobra.Command {
		var c clientCmd
		sub := &cobra.Command{
			Use: use + " TOPIC GROUP", Short: short, Args: cobra.ExactArgs(2), Long: clientLong(short + "."),
			RunE: runE(func(cmd *cobra.Command, args []string) error {
				return c.topicRPC(cmd, func(ctx context.Context, tc qv1.TopicServiceClient) error {
					g, resp, err := run(ctx, tc, args[0], args[1])
					if err != nil {
						return err
					}
					if c.structured() {
						return c.write(cmd.OutOrStdout(), resp)
					}
					if g == nil {
						_, err := fmt.Fprintf(cmd.OutOrStdout(), "deleted group %s of topic %s\n", args[1], args[0])
						return err
					}
					return printGroup(cmd.OutOrStdout(), g)
				})
			}),
		}
		c.register(sub)
		return sub
	}
	create := groupCmd("create", "Create a consumer group at --start (earliest, latest or a time)", func(ctx context.Context, tc qv1.TopicServiceClient, topic, group string) (*qv1.Group, proto.Message, error) {
		s, at, err := parseStart(start)
		if err != nil {
			return nil, nil, err
		}
		r, err := tc.CreateGroup(ctx, &qv1.CreateGroupRequest{Topic: topic, Group: group, Start: s, Time: at})
		return r.GetGroup(), r.GetGroup(), err
	})
	create.Flags().StringVar(&start, "start", "earliest", "earliest, latest or an RFC 3339 time")
	reset := groupCmd("reset", "Move a group to --start on every partition (replay)", func(ctx context.Context, tc qv1.TopicServiceClient, topic, group string) (*qv1.Group, proto.Message, error) {
		s, at, err := parseStart(start)
		if err != nil {
			return nil, nil, err
		}
		r, err := tc.ResetGroup(ctx, &qv1.ResetGroupRequest{Topic: topic, Group: group, Start: s, Time: at})
		return r.GetGroup(), r.GetGroup(), err
	})
	reset.Flags().StringVar(&start, "start", "earliest", "earliest, latest or an RFC 3339 time")
	get := groupCmd("get", "Show a group's committed offsets and lag", func(ctx context.Context, tc qv1.TopicServiceClient, topic, group string) (*qv1.Group, proto.Message, error) {
		r, err := tc.GetGroup(ctx, &qv1.GetGroupRequest{Topic: topic, Group: group})
		return r.GetGroup(), r.GetGroup(), err
	})
	del := groupCmd("delete", "Delete a group's offsets", func(ctx context.Context, tc qv1.TopicServiceClient, topic, group string) (*qv1.Group, proto.Message, error) {
		r, err := tc.DeleteGroup(ctx, &qv1.DeleteGroupRequest{Topic: topic, Group: group})
		return nil, r, err
	})
	cmd.AddCommand(create, get, reset, del)
	return cmd
}

func newTopicReadCmd() *cobra.Command {
	var c clientCmd
	var (
		group     string
		partition int32
		offset    int64
		max       int32
		wait      time.Duration
		commit    bool
	)
	cmd := &cobra.Command{
		Use: "read TOPIC --group GROUP", Short: "Read a partition in offset order (a consumer group's position)", Args: cobra.ExactArgs(1),
		Long: clientLong(`Read up to --max messages of --partition from the group's committed
offset (or --offset), waiting up to --wait for one, and print one line
per message: offset, id and body. --commit commits the offset after the
last message printed.`),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.topicRPC(cmd, func(ctx context.Context, tc qv1.TopicServiceClient) error {
				req := &qv1.ReadTopicRequest{Topic: args[0], Group: group, Partition: partition, MaxMessages: max, WaitTime: durationpb.New(wait)}
				if cmd.Flags().Changed("offset") {
					req.Offset = proto.Int64(offset)
				}
				r, err := tc.ReadTopic(ctx, req)
				if err != nil {
					return err
				}
				if commit && len(r.GetMessages()) > 0 {
					if _, err := tc.CommitOffsets(ctx, &qv1.CommitOffsetsRequest{Topic: args[0], Group: group,
						Offsets: []*qv1.PartitionOffset{{Partition: partition, Offset: r.GetNextOffset()}}}); err != nil {
						return err
					}
				}
				if c.structured() {
					return c.write(cmd.OutOrStdout(), r)
				}
				for _, m := range r.GetMessages() {
					if _, err := fmt.Fprintf(cmd.OutOrStdout(), "%d\t%s\t%s\n", m.GetOffset(), m.GetMessageId(), m.GetBody()); err != nil {
						return err
					}
				}
				if len(r.GetMessages()) == 0 {
					fmt.Fprintln(cmd.ErrOrStderr(), "no messages")
				}
				return nil
			})
		}),
	}
	c.register(cmd)
	f := cmd.Flags()
	f.StringVar(&group, "group", "", "consumer group (required)")
	f.Int32Var(&partition, "partition", 0, "partition")
	f.Int64Var(&offset, "offset", 0, "read from this offset instead of the group's committed one")
	f.Int32Var(&max, "max", 10, "at most this many messages (1 to 1000)")
	f.DurationVar(&wait, "wait", 0, "wait up to this long for a message (up to 20s)")
	f.BoolVar(&commit, "commit", false, "commit the offset after the messages printed")
	_ = cmd.MarkFlagRequired("group")
	return cmd
}
