package shardserver_test

import (
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
)

// UpdateQueue with the mask path "tags" removes then sets tags in one
// command, on every partition, and leaves the attributes alone.
func TestUpdateQueueTags(t *testing.T) {
	n := startNode(t, nodeOpts{Shards: 3})
	ctx := tctx(t)
	if _, err := n.Client.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "tagged", Tags: map[string]string{"a": "1", "b": "2"},
		Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(7e9), Partitions: 2}}); err != nil {
		t.Fatal(err)
	}
	mask := &fieldmaskpb.FieldMask{Paths: []string{"tags"}}
	up, err := n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "tagged", UpdateMask: mask,
		Tags: map[string]string{"b": "3", "c": "4"}, RemoveTags: []string{"a", "absent"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: "tagged"})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []*qv1.Queue{up.GetQueue(), got.GetQueue()} {
		if fmt.Sprint(q.GetTags()) != "map[b:3 c:4]" || q.GetAttributes().GetVisibilityTimeout().AsDuration().Seconds() != 7 ||
			q.GetAttributes().GetPartitions() != 2 {
			t.Fatalf("after the tag edit: tags %v attributes %v", q.GetTags(), q.GetAttributes())
		}
	}
	// Creating it again with the same attributes and its tags still matches.
	if _, err := n.Client.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "tagged", Tags: map[string]string{"b": "3", "c": "4"},
		Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(7e9), Partitions: 2}}); err != nil {
		t.Fatalf("create again after the tag edit: %v", err)
	}

	_, err = n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "tagged", Tags: map[string]string{"x": "y"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"visibility_timeout"}}, Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(7e9)}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	_, err = n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "tagged", UpdateMask: mask, RemoveTags: []string{""}})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	many := map[string]string{}
	for i := range 49 {
		many[fmt.Sprint("k", i)] = "v"
	}
	// 49 new + b + c = 51: over the limit, refused whole.
	_, err = n.Client.UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "tagged", UpdateMask: mask, Tags: many})
	wantReason(t, err, codes.InvalidArgument, server.ReasonInvalidArgument)
	got, err = n.Client.GetQueue(ctx, &qv1.GetQueueRequest{Name: "tagged"})
	if err != nil || len(got.GetQueue().GetTags()) != 2 {
		t.Fatalf("after the refused edit: %v %v", got, err)
	}
}
