package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// fieldMarshaler is the JSON marshaler of the REST mapping. It decodes as
// runtime.JSONPb does and, when a request body does not decode, names the
// request field at fault, so the 400 carries it like the server's own
// validation errors do.
type fieldMarshaler struct {
	*runtime.JSONPb
}

// NewDecoder reads one JSON value per Decode, as runtime.JSONPb's decoder.
func (m fieldMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	dec := json.NewDecoder(r)
	return runtime.DecoderFunc(func(v any) error {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err // io.EOF: an empty body, which the handlers accept
		}
		err := m.Unmarshal(raw, v)
		if err == nil {
			return nil
		}
		if md := descriptorOf(v); md != nil {
			if field := locateField(raw, md, err); field != "" {
				return &bodyFieldError{field: field, err: err}
			}
		}
		return err
	})
}

// bodyFieldError is a body that does not decode, with the field at fault.
// The generated handlers keep only its text (status.Errorf("%v")), so the
// text starts with the quoted field for the error handler to read back.
type bodyFieldError struct {
	field string
	err   error
}

const fieldErrorPrefix = "field "

func (e *bodyFieldError) Error() string {
	return fieldErrorPrefix + strconv.Quote(e.field) + ": " + e.err.Error()
}

func (e *bodyFieldError) Unwrap() error { return e.err }

// fieldOfMessage reads back the field of a bodyFieldError's text; "" if the
// text is not one.
func fieldOfMessage(msg string) string {
	rest, ok := strings.CutPrefix(msg, fieldErrorPrefix)
	if !ok {
		return ""
	}
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return ""
	}
	field, err := strconv.Unquote(q)
	if err != nil {
		return ""
	}
	return field
}

// descriptorOf returns the message descriptor of a decode target: a
// proto.Message or a pointer to one (body: "attributes" decodes into
// &req.Attributes).
func descriptorOf(v any) protoreflect.MessageDescriptor {
	if m, ok := v.(proto.Message); ok {
		return m.ProtoReflect().Descriptor()
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer {
		return nil
	}
	if m, ok := reflect.Zero(rv.Type().Elem()).Interface().(proto.Message); ok {
		return m.ProtoReflect().Descriptor()
	}
	return nil
}

// protojsonPos finds the "(line L:C)" position protojson puts in its errors.
var protojsonPos = regexp.MustCompile(`\(line (\d+):(\d+)\)`)

// locateField names the field of md at the position a protojson error
// points to in raw: "entries[2].delay" (proto field names, as the server's
// validation names them). It returns "" when the error has no position or
// the position is not inside a field.
func locateField(raw []byte, md protoreflect.MessageDescriptor, err error) string {
	m := protojsonPos.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	target := offsetOf(raw, line, col)
	if target < 0 {
		return ""
	}
	l := &locator{dec: json.NewDecoder(bytes.NewReader(raw)), raw: raw, target: target}
	if err := l.value("", shape{md: md}); !errors.Is(err, errFound) {
		return ""
	}
	return l.found
}

// offsetOf converts protojson's 1-based line and rune column to a byte
// offset in raw; -1 if out of range.
func offsetOf(raw []byte, line, col int) int {
	off := 0
	for ; line > 1; line-- {
		i := bytes.IndexByte(raw[off:], '\n')
		if i < 0 {
			return -1
		}
		off += i + 1
	}
	for ; col > 1; col-- {
		if off >= len(raw) {
			return -1
		}
		_, n := utf8.DecodeRune(raw[off:])
		off += n
	}
	return off
}

// shape is what a JSON value is expected to be: a message (md), a list of
// them or of scalars (list), a map (mapValue: the shape of its values).
type shape struct {
	md       protoreflect.MessageDescriptor
	list     bool
	mapValue *shape
}

// shapeOf is the shape of a field's value.
func shapeOf(fd protoreflect.FieldDescriptor) shape {
	if fd.IsMap() {
		v := shape{}
		if fd.MapValue().Kind() == protoreflect.MessageKind {
			v.md = fd.MapValue().Message()
		}
		return shape{mapValue: &v}
	}
	s := shape{list: fd.IsList()}
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		s.md = fd.Message()
	}
	return s
}

var errFound = errors.New("found")

// locator walks the tokens of a JSON value, keeping the field path, until
// it reaches the token at target.
type locator struct {
	dec    *json.Decoder
	raw    []byte
	target int
	found  string
}

// next returns the offset where the next token starts.
func (l *locator) next() int {
	o := int(l.dec.InputOffset())
	for o < len(l.raw) && strings.IndexByte(" \t\r\n:,", l.raw[o]) >= 0 {
		o++
	}
	return o
}

// at stops the walk with path if the next token is at or past the target.
func (l *locator) at(path string) error {
	if l.next() >= l.target {
		l.found = path
		return errFound
	}
	return nil
}

func (l *locator) value(path string, s shape) error {
	if err := l.at(path); err != nil {
		return err
	}
	tok, err := l.dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('['):
		elem := shape{md: s.md}
		for i := 0; l.dec.More(); i++ {
			p := path
			if s.list {
				p = fmt.Sprintf("%s[%d]", path, i)
			}
			if err := l.value(p, elem); err != nil {
				return err
			}
		}
	case json.Delim('{'):
		for l.dec.More() {
			keyStart := l.next()
			if keyStart > l.target {
				l.found = path
				return errFound
			}
			tok, err := l.dec.Token()
			if err != nil {
				return err
			}
			key, _ := tok.(string)
			childPath, child := path, shape{}
			switch {
			case s.mapValue != nil:
				child = *s.mapValue // a map's keys are data, not fields
			case s.md != nil && isWellKnown(s.md):
				// Struct, Value, Any …: their keys are data too.
			case s.md != nil:
				fd := s.md.Fields().ByJSONName(key)
				if fd == nil {
					fd = s.md.Fields().ByTextName(key)
				}
				name := key
				if fd != nil {
					name, child = string(fd.Name()), shapeOf(fd)
				}
				childPath = join(path, name)
			default:
				childPath = join(path, key)
			}
			if keyStart == l.target { // protojson points at the key of an unknown field
				l.found = childPath
				return errFound
			}
			if err := l.value(childPath, child); err != nil {
				return err
			}
		}
	default:
		return nil
	}
	_, err = l.dec.Token() // the closing ] or }
	return err
}

func isWellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile() != nil && strings.HasPrefix(string(md.FullName()), "google.protobuf.")
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
