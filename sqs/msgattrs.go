package sqs

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"
)

// SQS message attributes are typed (String, Number, Binary, each with an
// optional ".custom" suffix); quorumq's are a string map. A String
// attribute is stored as it is, so the REST and gRPC APIs see it plainly;
// a Binary value is stored in base64; the types other than plain String
// go into one reserved attribute, typesKey, as a form-encoded name=type
// list. SQS forbids attribute names starting with "AWS.", so no SQS
// client can collide with it.
const typesKey = "AWS.SQS.DataTypes"

// SQS's bounds on message attributes.
const (
	maxMessageAttributes = 10
	maxAttrNameChars     = 256
)

// msgAttrIn is a message attribute as a request carries it.
type msgAttrIn struct {
	DataType         string
	StringValue      *string
	BinaryValue      *string // base64 (JSON blob, Query parameter)
	StringListValues []any
	BinaryListValues []any
}

// msgAttr is a validated attribute: the value's bytes and its type.
type msgAttr struct {
	dataType string
	value    []byte
	binary   bool
}

// msgAttrOut is an attribute as a response carries it.
type msgAttrOut struct {
	StringValue string `json:",omitempty" xml:",omitempty"`
	BinaryValue string `json:",omitempty" xml:",omitempty"` // base64
	DataType    string
}

var (
	attrNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,256}$`)
	numberPattern   = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$`)
)

// validAttrName applies SQS's rules for attribute names.
func validAttrName(n string) bool {
	l := strings.ToLower(n)
	return attrNamePattern.MatchString(n) && !strings.HasPrefix(l, "aws.") && !strings.HasPrefix(l, "amazon.") &&
		!strings.Contains(n, "..") && !strings.HasPrefix(n, ".") && !strings.HasSuffix(n, ".")
}

// baseType is the type without its custom suffix ("Number.float" → Number).
func baseType(t string) string {
	b, _, _ := strings.Cut(t, ".")
	return b
}

// parseMessageAttributes validates a request's message attributes.
func parseMessageAttributes(field string, in map[string]msgAttrIn) (map[string]msgAttr, error) {
	if len(in) > maxMessageAttributes {
		return nil, errInvalidParameter("Number of message attributes [%d] exceeds the allowed maximum [%d].", len(in), maxMessageAttributes)
	}
	out := make(map[string]msgAttr, len(in))
	for name, a := range in {
		if !validAttrName(name) {
			return nil, errInvalidParameter("Message (user) attribute name '%s' is invalid. Names must be 1 to 256 characters of A-Z, a-z, 0-9, '_', '-' and '.', must not start with AWS. or Amazon., nor start or end with '.', nor contain '..'.", name)
		}
		if len(a.StringListValues) > 0 || len(a.BinaryListValues) > 0 {
			return nil, errUnsupported("Message attribute list values in SendMessage operation are not supported.")
		}
		if a.DataType == "" {
			return nil, errInvalidParameter("The message attribute '%s' must contain a non-empty message attribute type.", name)
		}
		if len(a.DataType) > maxAttrNameChars || !utf8.ValidString(a.DataType) {
			return nil, errInvalidParameter("The message attribute '%s' has a data type longer than %d characters.", name, maxAttrNameChars)
		}
		switch baseType(a.DataType) {
		case "String", "Number":
			if a.StringValue == nil || *a.StringValue == "" {
				return nil, errInvalidParameter("The message attribute '%s' must contain a non-empty message attribute value for message attribute type '%s'.", name, a.DataType)
			}
			if !validText(*a.StringValue) {
				return nil, errInvalidParameter("The message attribute '%s' contains characters outside the allowed set.", name)
			}
			if baseType(a.DataType) == "Number" && !numberPattern.MatchString(*a.StringValue) {
				return nil, errInvalidParameter("Can't cast the value of message (user) attribute '%s' to a number.", name)
			}
			out[name] = msgAttr{dataType: a.DataType, value: []byte(*a.StringValue)}
		case "Binary":
			if a.BinaryValue == nil || *a.BinaryValue == "" {
				return nil, errInvalidParameter("The message attribute '%s' must contain a non-empty message attribute value for message attribute type '%s'.", name, a.DataType)
			}
			b, err := base64.StdEncoding.DecodeString(*a.BinaryValue)
			if err != nil {
				return nil, errInvalidParameter("The binary value of message attribute '%s' is not valid base64.", name)
			}
			out[name] = msgAttr{dataType: a.DataType, value: b, binary: true}
		default:
			return nil, errInvalidParameter("The type of message (user) attribute '%s' is invalid. You must use only the following supported type prefixes: Binary, Number, String.", name)
		}
	}
	return out, nil
}

// attrsSize is what attributes count toward the message size in SQS:
// name, type and value bytes.
func attrsSize(attrs map[string]msgAttr) int {
	n := 0
	for name, a := range attrs {
		n += len(name) + len(a.dataType) + len(a.value)
	}
	return n
}

// md5OfAttributes is SQS's MD5OfMessageAttributes: over the attributes
// sorted by name, each as length-prefixed (4-byte big-endian) name and
// type, a transport byte (1 string, 2 binary) and the length-prefixed
// value. Empty for no attributes.
func md5OfAttributes(attrs map[string]msgAttr) string {
	if len(attrs) == 0 {
		return ""
	}
	names := make([]string, 0, len(attrs))
	for n := range attrs {
		names = append(names, n)
	}
	sort.Strings(names)
	h := md5.New()
	put := func(b []byte) {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(b)))
		h.Write(l[:])
		h.Write(b)
	}
	for _, n := range names {
		a := attrs[n]
		put([]byte(n))
		put([]byte(a.dataType))
		if a.binary {
			h.Write([]byte{2})
		} else {
			h.Write([]byte{1})
		}
		put(a.value)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// toStored encodes validated attributes into quorumq's attributes and
// tags: the attribute named tagsAttr (a String) becomes the tags.
func toStored(attrs map[string]msgAttr, tagsAttr string) (map[string]string, []string) {
	var (
		stored map[string]string
		tags   []string
		types  = url.Values{}
	)
	for name, a := range attrs {
		if name == tagsAttr && a.dataType == "String" {
			for _, t := range strings.Split(string(a.value), ",") {
				if t = strings.TrimSpace(t); t != "" {
					tags = append(tags, t)
				}
			}
			continue
		}
		if stored == nil {
			stored = map[string]string{}
		}
		if a.binary {
			stored[name] = base64.StdEncoding.EncodeToString(a.value)
		} else {
			stored[name] = string(a.value)
		}
		if a.dataType != "String" {
			types.Set(name, a.dataType)
		}
	}
	if len(types) > 0 {
		stored[typesKey] = types.Encode()
	}
	return stored, tags
}

// fromStored decodes a stored message's attributes and tags back into
// typed SQS attributes. Attributes set through the other APIs are Strings.
func fromStored(stored map[string]string, tags []string, tagsAttr string) map[string]msgAttr {
	types, _ := url.ParseQuery(stored[typesKey])
	out := make(map[string]msgAttr, len(stored))
	for name, v := range stored {
		if name == typesKey {
			continue
		}
		t := types.Get(name)
		if t == "" {
			t = "String"
		}
		if baseType(t) == "Binary" {
			b, err := base64.StdEncoding.DecodeString(v)
			if err == nil {
				out[name] = msgAttr{dataType: t, value: b, binary: true}
				continue
			}
			t = "String" // not ours: show it as it is
		}
		out[name] = msgAttr{dataType: t, value: []byte(v)}
	}
	if len(tags) > 0 {
		out[tagsAttr] = msgAttr{dataType: "String", value: []byte(strings.Join(tags, ","))}
	}
	return out
}

// selectAttrs keeps the attributes a receive asked for: "All", ".*",
// names, or prefixes ending in ".*".
func selectAttrs(attrs map[string]msgAttr, names []string) map[string]msgAttr {
	if len(names) == 0 {
		return nil
	}
	out := map[string]msgAttr{}
	for n, a := range attrs {
		for _, want := range names {
			if want == "All" || want == ".*" || want == n ||
				(strings.HasSuffix(want, ".*") && strings.HasPrefix(n, strings.TrimSuffix(want, "*"))) {
				out[n] = a
				break
			}
		}
	}
	return out
}

// msgAttrMap is a message's attributes in a response.
type msgAttrMap map[string]msgAttrOut

func toOut(attrs map[string]msgAttr) msgAttrMap {
	if len(attrs) == 0 {
		return nil
	}
	out := make(msgAttrMap, len(attrs))
	for n, a := range attrs {
		o := msgAttrOut{DataType: a.dataType}
		if a.binary {
			o.BinaryValue = base64.StdEncoding.EncodeToString(a.value)
		} else {
			o.StringValue = string(a.value)
		}
		out[n] = o
	}
	return out
}

// MarshalXML writes flattened <MessageAttribute><Name/><Value/> elements.
func (m msgAttrMap) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := struct {
			Name  string
			Value msgAttrOut
		}{n, m[n]}
		if err := e.EncodeElement(v, xml.StartElement{Name: start.Name}); err != nil {
			return err
		}
	}
	return nil
}

// validText reports whether s holds only the characters SQS allows in a
// message: #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF.
func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		switch {
		case r == 0x9, r == 0xA, r == 0xD:
		case r >= 0x20 && r <= 0xD7FF:
		case r >= 0xE000 && r <= 0xFFFD:
		case r >= 0x10000 && r <= 0x10FFFF:
		default:
			return false
		}
	}
	return true
}
