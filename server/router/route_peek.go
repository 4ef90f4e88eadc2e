package router

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	qv1 "github.com/quorumq/quorumq/api/quorumq/v1"
	"github.com/quorumq/quorumq/server"
	"github.com/quorumq/quorumq/server/shardserver"
	"github.com/quorumq/quorumq/store"
)

// Browsing a partitioned queue: pages walk the partitions in order, each in
// seq order, so a page token is (partition, seq). Each partition call reads
// a bounded number of records; a call stops at the first partition that
// did not finish, so one page costs at most one budget per partition.

// peekToken is the router's page token: partition and the seq to resume
// from there, base64url of "partition.seq".
func peekToken(partition int, seq uint64) string {
	return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "%d.%d", partition, seq))
}

func parsePeekToken(tok string, partitions int) (int, uint64, error) {
	bad := server.FieldError("page_token", "not a token from a previous response")
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, 0, bad
	}
	ps, ss, ok := strings.Cut(string(b), ".")
	p, perr := strconv.Atoi(ps)
	seq, serr := strconv.ParseUint(ss, 10, 64)
	if !ok || perr != nil || serr != nil || p < 0 || p >= partitions {
		return 0, 0, bad
	}
	return p, seq, nil
}

// PeekMessages implements QueueService.
func (r *Router) PeekMessages(ctx context.Context, req *qv1.PeekMessagesRequest) (*qv1.PeekMessagesResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).PeekMessages)
	}
	tenant, q, err := r.resolve(ctx, "queue", req.GetQueue(), shardserver.PeekScopes...)
	if err != nil {
		return nil, err
	}
	if _, _, err := shardserver.PeekFilter(req); err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = shardserver.DefaultPeekPageSize
	}
	n := partitions(q)
	p, seq := 0, uint64(0)
	if tok := req.GetPageToken(); tok != "" {
		if p, seq, err = parsePeekToken(tok, n); err != nil {
			return nil, err
		}
	}
	out := &qv1.PeekMessagesResponse{}
	for ; p < n; p, seq = p+1, 0 {
		sub := &qv1.PeekMessagesRequest{Queue: store.PartitionName(q.GetName(), p), States: req.GetStates(),
			TagFilter: req.GetTagFilter(), Attribute: req.GetAttribute(), MinAge: req.GetMinAge(),
			PageSize: int32(size - len(out.Messages))}
		if seq != 0 {
			sub.PageToken = strconv.FormatUint(seq, 10)
		}
		resp, err := onPartition(ctx, r, tenant, q, p, "PeekMessages", sub, (*shardserver.Server).PeekMessages)
		if err != nil {
			return nil, err
		}
		for _, m := range resp.GetMessages() {
			m.Partition = int32(p)
		}
		out.Messages = append(out.Messages, resp.GetMessages()...)
		if next := resp.GetNextPageToken(); next != "" {
			s, err := strconv.ParseUint(next, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("partition %d answered a bad page token %q", p, next)
			}
			out.NextPageToken = peekToken(p, s)
			return out, nil
		}
		if len(out.Messages) >= size {
			if p+1 < n {
				out.NextPageToken = peekToken(p+1, 0)
			}
			return out, nil
		}
	}
	return out, nil
}

// GetMessage implements QueueService: an id names the shard it was sent
// on, but a message may have moved (dead-lettered, redriven) and the
// partition count may have grown, so every partition is asked.
func (r *Router) GetMessage(ctx context.Context, req *qv1.GetMessageRequest) (*qv1.GetMessageResponse, error) {
	if sh, ok := direct(ctx); ok {
		return onShard(ctx, r, sh, req, (*shardserver.Server).GetMessage)
	}
	tenant, q, err := r.resolve(ctx, "queue", req.GetQueue(), shardserver.PeekScopes...)
	if err != nil {
		return nil, err
	}
	if err := shardserver.CheckMessageIDLength(req.GetMessageId()); err != nil {
		return nil, err
	}
	parts, err := fanOut(q, func(i int) (*qv1.GetMessageResponse, error) {
		sub := &qv1.GetMessageRequest{Queue: store.PartitionName(q.GetName(), i), MessageId: req.GetMessageId()}
		resp, err := onPartition(ctx, r, tenant, q, i, "GetMessage", sub, (*shardserver.Server).GetMessage)
		if server.ReasonOf(err) == server.ReasonMessageNotFound {
			return nil, nil
		}
		return resp, err
	})
	for i, resp := range parts {
		if resp != nil {
			resp.Message.Partition = int32(i)
			return resp, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return nil, shardserver.MessageNotFound(req.GetMessageId())
}
