package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/quorumq/quorumq/server"
)

// withInfo builds a status with the quorumq ErrorInfo, and a BadRequest
// field violation when field is set (as the server's statusError does).
func withInfo(code codes.Code, reason, msg string, meta map[string]string, field string) *status.Status {
	if field != "" {
		if meta == nil {
			meta = map[string]string{}
		}
		meta["field"] = field
	}
	st := status.New(code, msg)
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: server.ErrorDomain, Metadata: meta}}
	if field != "" {
		details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}}})
	}
	if s, err := st.WithDetails(details...); err == nil {
		st = s
	}
	return st
}

// hasReason reports whether st carries a quorumq ErrorInfo: it comes from
// the server (or this edge), not from the gateway's decoding or the gRPC
// transport.
func hasReason(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == server.ErrorDomain {
			return true
		}
	}
	return false
}

// errorHandler answers every error of the REST mapping. Errors of the
// server pass through as the default handler maps them; errors the gateway
// makes itself get a reason: a request body over the cap 413
// MESSAGE_TOO_LARGE, a body that does not decode 400 INVALID_ARGUMENT with
// the field where known, and a gRPC size limit never 429 (which tells
// clients to retry).
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	var tl *tooLargeError
	if errors.As(err, &tl) {
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: tl.st.Err()})
		return
	}
	var hse *runtime.HTTPStatusError
	if errors.As(err, &hse) {
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
		return
	}
	st := status.Convert(err)
	if hasReason(st) {
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
		return
	}
	if bs := stateOf(r.Context()); bs != nil && bs.tooLarge {
		// The decoder stopped at the cap; whatever it said, the body was
		// too large.
		runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: bodyTooLarge(bs.limit).Err()})
		return
	}
	switch st.Code() {
	case codes.InvalidArgument:
		// The gateway's own: a body, path or query parameter that does not
		// decode.
		field := fieldOfMessage(st.Message())
		if field != "" {
			field = bodyFieldPrefix(ctx) + field
		}
		err = withInfo(codes.InvalidArgument, server.ReasonInvalidArgument, st.Message(), nil, field).Err()
	case codes.ResourceExhausted:
		// A gRPC size limit: requests over it are refused before they are
		// sent (sizeCheckedConn), so this is a reply the transport could
		// not carry. Retrying does not help.
		err = withInfo(codes.Internal, server.ReasonInternal, "reply too large for the transport: "+st.Message(), nil, "").Err()
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// bodyFieldPrefix is "attributes." for an RPC whose HTTP body is one field
// of the request (UpdateQueue: body "attributes"), so decode errors name
// the request field; "" for body "*".
func bodyFieldPrefix(ctx context.Context) string {
	method, ok := runtime.RPCMethod(ctx) // "/quorumq.v1.QueueService/UpdateQueue"
	if !ok {
		return ""
	}
	name := protoreflect.FullName(strings.ReplaceAll(strings.TrimPrefix(method, "/"), "/", "."))
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		return ""
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return ""
	}
	rule, ok := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	if !ok || rule.GetBody() == "" || rule.GetBody() == "*" {
		return ""
	}
	return rule.GetBody() + "."
}

// routingErrorHandler answers requests no route takes: 404 for an unknown
// path, 405 with Allow for a known path with another method (the default
// answers 501 Not Implemented, which says the server lacks a feature).
func routingErrorHandler(rt routes) runtime.RoutingErrorHandlerFunc {
	return func(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, code int) {
		var err error
		switch code {
		case http.StatusMethodNotAllowed:
			allow := rt.allowed(r.URL.Path)
			if len(allow) > 0 {
				w.Header().Set("Allow", strings.Join(allow, ", "))
			}
			err = &runtime.HTTPStatusError{HTTPStatus: code, Err: status.Errorf(codes.Unimplemented,
				"method %s not allowed on %s", r.Method, r.URL.Path)}
		case http.StatusNotFound:
			err = status.Errorf(codes.NotFound, "no route for %s %s", r.Method, r.URL.Path)
		default:
			runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, code)
			return
		}
		runtime.HTTPError(ctx, mux, m, w, r, err)
	}
}

// routes are the REST paths and methods, read from the OpenAPI document
// generated from the same HTTP rules as the mux.
type routes []route

type route struct {
	segments []string // "v1", "queues", "{name}:purge"
	methods  []string // GET, POST, …
}

func parseRoutes(spec []byte) (routes, error) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(spec, &doc); err != nil {
		return nil, fmt.Errorf("read OpenAPI paths: %w", err)
	}
	var rt routes
	for p, ops := range doc.Paths {
		r := route{segments: strings.Split(strings.TrimPrefix(p, "/"), "/")}
		for method := range ops {
			switch m := strings.ToUpper(method); m {
			case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
				r.methods = append(r.methods, m)
			}
		}
		rt = append(rt, r)
	}
	return rt, nil
}

// allowed returns the methods of the routes that match path, sorted.
func (rt routes) allowed(p string) []string {
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	var out []string
	for _, r := range rt {
		if r.match(segs) {
			out = append(out, r.methods...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// match: a "{var}" segment takes any non-empty segment, "{var}:verb" one
// that ends in ":verb"; other segments are literal.
func (r route) match(segs []string) bool {
	if len(segs) != len(r.segments) {
		return false
	}
	for i, t := range r.segments {
		s := segs[i]
		if !strings.HasPrefix(t, "{") {
			if s != t {
				return false
			}
			continue
		}
		end := strings.IndexByte(t, '}')
		if end < 0 {
			return false
		}
		suffix := t[end+1:]
		if len(s) <= len(suffix) || !strings.HasSuffix(s, suffix) {
			return false
		}
	}
	return true
}

// cleanPaths answers 404 for a path that is not in canonical form ("//",
// "/./", "/../"). net/http's ServeMux would redirect it to the cleaned path,
// and a client following the redirect resends, or drops the body of, a
// request that named no resource.
func cleanPaths(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; r.Method != http.MethodConnect && p != canonical(p) {
			writeStatus(w, http.StatusNotFound, status.Newf(codes.NotFound, "no route for %s %s", r.Method, p))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// canonical is the path net/http's ServeMux routes: cleaned, keeping a
// trailing slash.
func canonical(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	c := path.Clean(p)
	if p[len(p)-1] == '/' && c != "/" {
		c += "/"
	}
	return c
}

// writeStatus writes st as the JSON body the REST mapping answers errors
// with, for answers made outside the grpc-gateway mux.
func writeStatus(w http.ResponseWriter, code int, st *status.Status) {
	buf, err := jsonOptions.MarshalOptions.Marshal(st.Proto())
	if err != nil {
		buf = []byte(`{"code": 13, "message": "failed to marshal error message"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(buf)
}
