package sqs

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// The two wire protocols meet in one request shape: AWS JSON 1.0 bodies
// are used as they are; Query parameters ("Attribute.1.Name=…") are
// folded into the same JSON document, so every action decodes one struct.

// decodeJSON checks an AWS JSON 1.0 body (empty means {}).
func decodeJSON(body []byte) ([]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return []byte("{}"), nil
	}
	if !json.Valid(body) || bytes.TrimSpace(body)[0] != '{' {
		return nil, &apiError{status: http.StatusBadRequest, shape: "SerializationException", code: "SerializationException",
			msg: "the request body is not a JSON object"}
	}
	return body, nil
}

// maxQueryParams bounds the parameters of one Query request (a batch of 10
// messages with 10 attributes of 4 fields each, and more).
const maxQueryParams = 1000

// decodeQuery reads a Query request (URL query and form body) and returns
// its action and its parameters as the JSON document of that action.
func decodeQuery(r *http.Request, body []byte) (string, []byte, error) {
	params := r.URL.Query()
	if len(body) > 0 {
		ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if ct != "" && ct != "application/x-www-form-urlencoded" {
			return "", nil, errInvalidAction(fmt.Sprintf("unsupported content type %q: send X-Amz-Target with application/x-amz-json-1.0, or a form", ct))
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return "", nil, errInvalidParameter("malformed form body: %v", err)
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
	}
	if len(params) > maxQueryParams {
		return "", nil, errInvalidParameter("at most %d parameters per request", maxQueryParams)
	}
	action := params.Get("Action")
	if action == "" {
		return "", nil, errMissingParameter("Action")
	}
	tree := map[string]any{}
	for k, vs := range params {
		if k == "Action" || k == "Version" || strings.HasPrefix(k, "X-Amz-") || len(vs) == 0 {
			continue
		}
		if err := insert(tree, strings.Split(k, "."), vs[0]); err != nil {
			return "", nil, errInvalidParameter("parameter %s: %v", k, err)
		}
	}
	doc := normalize(tree).(map[string]any)
	out, err := json.Marshal(doc)
	if err != nil {
		return "", nil, errInvalidParameter("%v", err)
	}
	return action, out, nil
}

// insert puts value at path in the tree; a numeric segment is a list index
// (kept as "#n" until normalize turns the map into a list).
func insert(tree map[string]any, path []string, value string) error {
	for i, seg := range path {
		if seg == "" {
			return fmt.Errorf("empty name segment")
		}
		if n, err := strconv.Atoi(seg); err == nil {
			if n < 1 || n > maxQueryParams {
				return fmt.Errorf("index %d out of range", n)
			}
			seg = "#" + seg
		}
		if i == len(path)-1 {
			if _, ok := tree[seg].(map[string]any); ok {
				return fmt.Errorf("both a value and a structure")
			}
			tree[seg] = value
			return nil
		}
		next, ok := tree[seg].(map[string]any)
		if !ok {
			if _, isVal := tree[seg]; isVal {
				return fmt.Errorf("both a value and a structure")
			}
			next = map[string]any{}
			tree[seg] = next
		}
		tree = next
	}
	return nil
}

// normalize turns index maps into lists and the Query protocol's
// flattened names into the JSON protocol's members.
func normalize(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	if isIndexMap(m) {
		keys := make([]int, 0, len(m))
		for k := range m {
			n, _ := strconv.Atoi(k[1:])
			keys = append(keys, n)
		}
		sort.Ints(keys)
		list := make([]any, 0, len(keys))
		for _, k := range keys {
			list = append(list, normalize(m["#"+strconv.Itoa(k)]))
		}
		return list
	}
	out := make(map[string]any, len(m))
	for k, child := range m {
		child = normalize(child)
		switch {
		case k == "Attribute":
			out["Attributes"] = pairs(child, "Name", "Value")
		case k == "MessageAttribute":
			out["MessageAttributes"] = pairs(child, "Name", "Value")
		case k == "MessageSystemAttribute":
			out["MessageSystemAttributes"] = pairs(child, "Name", "Value")
		case k == "Tag":
			out["Tags"] = pairs(child, "Key", "Value")
		case k == "AttributeName", k == "MessageAttributeName", k == "MessageSystemAttributeName", k == "TagKey":
			out[k+"s"] = child
		case strings.HasSuffix(k, "RequestEntry"):
			out["Entries"] = child
		default:
			out[k] = child
		}
	}
	return out
}

func isIndexMap(m map[string]any) bool {
	if len(m) == 0 {
		return false
	}
	for k := range m {
		if !strings.HasPrefix(k, "#") {
			return false
		}
	}
	return true
}

// pairs turns a list of {Name, Value} structures into a map.
func pairs(v any, key, val string) any {
	list, ok := v.([]any)
	if !ok {
		return v // not a list: the action reports the bad type
	}
	out := map[string]any{}
	for _, e := range list {
		em, ok := e.(map[string]any)
		if !ok {
			continue
		}
		k, _ := em[key].(string)
		out[k] = em[val]
	}
	return out
}

// num is an integer parameter: a JSON number, or a string (Query).
type num struct {
	v   int64
	set bool
}

func (n *num) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" {
		return nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errInvalidParameter("Value %s is not a valid integer.", s)
	}
	n.v, n.set = v, true
	return nil
}

// decode unmarshals the request document into req.
func decode(in []byte, req any) error {
	if err := json.Unmarshal(in, req); err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return ae
		}
		return errInvalidParameter("malformed request: %v", err)
	}
	return nil
}

const xmlNS = "http://queue.amazonaws.com/doc/2012-11-05/"

// writeResult sends a successful answer in the call's protocol; out nil
// means an empty result.
func (c *call) writeResult(w http.ResponseWriter, out any) {
	w.Header().Set("x-amzn-RequestId", c.reqID)
	if c.jsonAPI {
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		if out == nil {
			_, _ = w.Write([]byte("{}"))
			return
		}
		b, err := json.Marshal(out)
		if err != nil {
			c.writeError(w, &apiError{http.StatusInternalServerError, "InternalFailure", "InternalFailure", err.Error(), true})
			return
		}
		_, _ = w.Write(b)
		return
	}
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	fmt.Fprintf(&buf, `<%sResponse xmlns="%s">`, c.action, xmlNS)
	if out != nil {
		enc := xml.NewEncoder(&buf)
		if err := enc.EncodeElement(out, xml.StartElement{Name: xml.Name{Local: c.action + "Result"}}); err != nil {
			c.writeError(w, &apiError{http.StatusInternalServerError, "InternalFailure", "InternalFailure", err.Error(), true})
			return
		}
	}
	fmt.Fprintf(&buf, `<ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>`, c.reqID, c.action)
	w.Header().Set("Content-Type", "text/xml")
	_, _ = w.Write(buf.Bytes())
}

// writeError sends an SQS error: JSON __type and x-amzn-query-error, or
// the Query protocol's ErrorResponse.
func (c *call) writeError(w http.ResponseWriter, e *apiError) {
	fault := "Sender"
	if e.receiver {
		fault = "Receiver"
	}
	w.Header().Set("x-amzn-RequestId", c.reqID)
	if c.jsonAPI {
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.Header().Set("x-amzn-query-error", e.code+";"+fault)
		w.WriteHeader(e.status)
		b, _ := json.Marshal(map[string]string{"__type": "com.amazonaws.sqs#" + e.shape, "message": e.msg})
		_, _ = w.Write(b)
		return
	}
	type xmlError struct {
		Type    string
		Code    string
		Message string
		Detail  string
	}
	type errorResponse struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		NS        string   `xml:"xmlns,attr"`
		Error     xmlError
		RequestID string `xml:"RequestId"`
	}
	b, _ := xml.Marshal(errorResponse{NS: xmlNS, Error: xmlError{Type: fault, Code: e.code, Message: e.msg}, RequestID: c.reqID})
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(b)
}

// attrMap is a string map: a JSON object, or flattened <Attribute> pairs.
type attrMap map[string]string

func (m attrMap) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return marshalPairs(e, start, m, "Name", "Value")
}

// tagMap is a queue's tags: a JSON object, or flattened <Tag> pairs.
type tagMap map[string]string

func (m tagMap) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	return marshalPairs(e, start, m, "Key", "Value")
}

func marshalPairs(e *xml.Encoder, start xml.StartElement, m map[string]string, key, val string) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := e.EncodeToken(xml.StartElement{Name: start.Name}); err != nil {
			return err
		}
		if err := e.EncodeElement(k, xml.StartElement{Name: xml.Name{Local: key}}); err != nil {
			return err
		}
		if err := e.EncodeElement(m[k], xml.StartElement{Name: xml.Name{Local: val}}); err != nil {
			return err
		}
		if err := e.EncodeToken(xml.EndElement{Name: start.Name}); err != nil {
			return err
		}
	}
	return nil
}
