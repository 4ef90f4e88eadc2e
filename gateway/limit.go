package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/quorumq/quorumq/server"
)

// Request size bounds of the REST edge.
const (
	// MaxBodyBytes caps a REST request body. The largest legal request is a
	// batch of 100 entries with 4 MiB of bodies and attributes; JSON framing
	// (ids, field names, quotes) adds well under 1 MiB to that, and escaping
	// (\n, \", \\, \uXXXX) inflates text. 4 MiB × 1.5 + 1 MiB admits every
	// legal batch whose escaping adds up to half its size, and stays under
	// the node's 8 MiB gRPC receive limit: the protobuf form of a JSON body
	// is never larger than the JSON (every field name, quote and brace
	// costs at least what its tag and length cost), so anything admitted
	// here fits the transport. Text that escapes to several times its size
	// is better sent as raw UTF-8 (JSON allows it) or over gRPC.
	MaxBodyBytes = 4<<20*3/2 + 1<<20
	// maxGRPCRequest is the gRPC receive limit of the node's API listener
	// (server/node: grpc.MaxRecvMsgSize). A request over it is refused
	// here with 413, before it is sent: a transport refusal would come back
	// as RESOURCE_EXHAUSTED, which HTTP maps to 429 (retry later).
	maxGRPCRequest = 8 << 20
)

// limits are the bounds a handler enforces (tests lower them).
type limits struct {
	body int64 // bytes of REST request body
	grpc int   // bytes of the protobuf request sent to the node
}

// bodyState records what happened to one request's body.
type bodyState struct {
	limit    int64
	tooLarge bool // the body reached the limit
}

type bodyStateKey struct{}

func stateOf(ctx context.Context) *bodyState {
	st, _ := ctx.Value(bodyStateKey{}).(*bodyState)
	return st
}

// cappedBody reads at most the limit of a request body (http.MaxBytesReader)
// and notes in the request's bodyState when a client sent more.
type cappedBody struct {
	rc io.ReadCloser
	st *bodyState
}

func (b *cappedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.st.tooLarge = true
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }

// limitBody refuses a request whose declared Content-Length is over the
// limit with 413 before reading any of it, and caps the bodies of the rest
// (chunked ones have no length to check). It must wrap the handler the
// http.Server calls, with the server's own ResponseWriter: MaxBytesReader
// then also tells the server to close the connection instead of draining
// what the client is still sending.
func limitBody(h http.Handler, limit int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			// Close: the rest of the body is never read, so the connection
			// cannot carry another request.
			w.Header().Set("Connection", "close")
			writeStatus(w, http.StatusRequestEntityTooLarge, bodyTooLarge(limit))
			return
		}
		st := &bodyState{limit: limit}
		r = r.WithContext(context.WithValue(r.Context(), bodyStateKey{}, st))
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &cappedBody{rc: http.MaxBytesReader(w, r.Body, limit), st: st}
		}
		h.ServeHTTP(w, r)
	})
}

// bodyTooLarge is the status of a request body over the limit.
func bodyTooLarge(limit int64) *status.Status {
	return withInfo(codes.InvalidArgument, server.ReasonMessageTooLarge,
		fmt.Sprintf("request body exceeds %d bytes", limit),
		map[string]string{"limit": strconv.FormatInt(limit, 10)}, "")
}

// tooLargeError is a request the edge refuses for its size: answered 413.
type tooLargeError struct{ st *status.Status }

func (e *tooLargeError) Error() string              { return e.st.Message() }
func (e *tooLargeError) GRPCStatus() *status.Status { return e.st }

// sizeCheckedConn is the gateway's gRPC connection with the edge's size
// checks in front: a body that overran the cap after its JSON value (the
// generated handlers drain and ignore the rest) and a request whose
// protobuf form is over the node's receive limit are refused, not sent.
type sizeCheckedConn struct {
	grpc.ClientConnInterface
	maxRequest int
}

func (c sizeCheckedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if st := stateOf(ctx); st != nil && st.tooLarge {
		return &tooLargeError{bodyTooLarge(st.limit)}
	}
	if m, ok := args.(proto.Message); ok {
		if n := proto.Size(m); n > c.maxRequest {
			return &tooLargeError{withInfo(codes.InvalidArgument, server.ReasonMessageTooLarge,
				fmt.Sprintf("request is %d bytes, over the %d byte limit", n, c.maxRequest),
				map[string]string{"limit": strconv.Itoa(c.maxRequest)}, "")}
		}
	}
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}
