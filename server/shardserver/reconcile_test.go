package shardserver_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/router"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
	storepb "github.com/quorumq/quorumq/store/storepb/v1"
)

// reconcileWithin bounds a repair: the reconciler runs every 30
// housekeeping intervals (20 ms in tests), plus slack for a loaded machine.
const reconcileWithin = 15 * time.Second

// partitionCopy reads partition i of queue as its shard stores it.
func partitionCopy(n *testNode, queue string, i int) (*storepb.QueueRecord, error) {
	sh := router.ShardOf(partShards, server.DevTenant, queue, i)
	info, err := n.ShardStore(sh).Queue(server.DevTenant, store.PartitionName(queue, i))
	if err != nil {
		return nil, err
	}
	return info.Record, nil
}

// fillPartitions sends until every partition of queue holds a message.
func fillPartitions(t *testing.T, n *testNode, queue string, parts int) {
	t.Helper()
	for i := 0; ; i++ {
		send(t, n, queue, fmt.Sprint("m", i))
		full := true
		for p := range parts {
			full = full && partitionDepth(t, n, queue, p) > 0
		}
		if full {
			return
		}
		if i > 200 {
			t.Fatal("sends never reached every partition")
		}
	}
}

// Issue 23 item 8: a delete whose partition fan-out failed left the
// partitions (and their bytes) behind until retention. The record is
// deleted on the metadata shard alone here, as a fan-out that stopped
// half way would leave it; the reconciler removes every partition.
func TestReconcileRemovesPartitionsOfADeletedQueue(t *testing.T) {
	n := startSharded(t)
	createPartitioned(t, n.Client, "rq", 3, nil)
	fillPartitions(t, n, "rq", 3)

	ctx := shardserver.AsTenantForTest(tctx(t), server.DevTenant)
	if _, err := n.ShardServer(router.MetadataShard).DeleteQueue(ctx, &qv1.DeleteQueueRequest{Name: "rq"}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, reconcileWithin, 20*time.Millisecond, func() error {
		for i := range 3 {
			if _, err := partitionCopy(n, "rq", i); !errors.Is(err, store.ErrQueueNotFound) {
				return fmt.Errorf("partition %d still there (%v)", i, err)
			}
		}
		return nil
	})
}

// Issue 23 item 8: an UpdateQueue applied to the record but to no
// partition left them on the old attributes while GetQueue showed the new
// ones. The reconciler brings every partition to the record's attributes.
func TestReconcileBringsPartitionsToTheRecordsAttributes(t *testing.T) {
	n := startSharded(t)
	createPartitioned(t, n.Client, "uq", 3, nil)

	ctx := shardserver.AsTenantForTest(tctx(t), server.DevTenant)
	_, err := n.ShardServer(router.MetadataShard).UpdateQueue(ctx, &qv1.UpdateQueueRequest{Name: "uq",
		Attributes: &qv1.QueueAttributes{VisibilityTimeout: durationpb.New(45 * time.Second)},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"visibility_timeout"}}})
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, reconcileWithin, 20*time.Millisecond, func() error {
		for i := range 3 {
			cp, err := partitionCopy(n, "uq", i)
			if err != nil {
				return err
			}
			if got := cp.GetAttributes().GetVisibilityTimeoutMs(); got != 45_000 {
				return fmt.Errorf("partition %d has visibility %d ms, want 45000", i, got)
			}
		}
		return nil
	})
	// Messages received from any partition now take the new lease.
	send(t, n, "uq", "x")
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		m := receive(t, n, &qv1.ReceiveMessagesRequest{Queue: "uq"})
		if len(m) == 0 {
			return errNotYet
		}
		return nil
	})
}

// A queue deleted and created again on the record alone: the partitions
// of the earlier queue (with its messages) are replaced by empty ones of
// the new incarnation.
func TestReconcileReplacesPartitionsOfAnEarlierIncarnation(t *testing.T) {
	n := startSharded(t)
	createPartitioned(t, n.Client, "iq", 2, nil)
	fillPartitions(t, n, "iq", 2)
	old, err := partitionCopy(n, "iq", 0)
	if err != nil {
		t.Fatal(err)
	}

	ctx := shardserver.AsTenantForTest(tctx(t), server.DevTenant)
	meta := n.ShardServer(router.MetadataShard)
	if _, err := meta.DeleteQueue(ctx, &qv1.DeleteQueueRequest{Name: "iq"}); err != nil {
		t.Fatal(err)
	}
	var rec *qv1.Queue
	checkFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		// A new incarnation needs a later created_at (millisecond clock).
		r, err := meta.CreateQueue(ctx, &qv1.CreateQueueRequest{Name: "iq", Attributes: &qv1.QueueAttributes{Partitions: 2}})
		if err != nil {
			return err
		}
		rec = r.GetQueue()
		return nil
	})
	inc := rec.GetCreatedAt().AsTime().UnixMilli()
	if inc <= old.GetIncarnation() {
		t.Fatalf("re-created queue has incarnation %d, the earlier one %d", inc, old.GetIncarnation())
	}
	// A reconcile pass that ran between the delete and the create found no
	// record and dropped the copy instead: that is as right (the router
	// makes a missing partition of the new incarnation on first use, which
	// fillPartitions below checks). A copy that is still there must be of
	// the new incarnation and empty.
	checkFor(t, reconcileWithin, 20*time.Millisecond, func() error {
		for i := range 2 {
			cp, err := partitionCopy(n, "iq", i)
			if errors.Is(err, store.ErrQueueNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if cp.GetIncarnation() != inc {
				return fmt.Errorf("partition %d is of incarnation %d, want %d", i, cp.GetIncarnation(), inc)
			}
			if d := partitionDepth(t, n, "iq", i); d != 0 {
				return fmt.Errorf("partition %d of the new queue holds %d messages of the old one", i, d)
			}
		}
		return nil
	})
	fillPartitions(t, n, "iq", 2)
	for i := range 2 {
		cp, err := partitionCopy(n, "iq", i)
		if err != nil {
			t.Fatal(err)
		}
		if cp.GetIncarnation() != inc {
			t.Fatalf("partition %d is of incarnation %d after sends, want %d", i, cp.GetIncarnation(), inc)
		}
	}
}
