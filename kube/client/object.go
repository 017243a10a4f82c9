package client

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"time"
)

// Object is an API object as decoded JSON: maps, []any, strings, bools,
// int64 for integers and float64 for other numbers (what apimachinery's
// unstructured objects hold, so values compare the same).
type Object map[string]any

// Nested is the value at path (nil when absent).
func Nested(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		if v, ok = mm[p]; !ok {
			return nil
		}
	}
	return v
}

// NestedString is the string at path ("" when absent or not a string).
func NestedString(m map[string]any, path ...string) string {
	s, _ := Nested(m, path...).(string)
	return s
}

// NestedSlice is the list at path (nil when absent or not a list).
func NestedSlice(m map[string]any, path ...string) []any {
	s, _ := Nested(m, path...).([]any)
	return s
}

// NestedStringMap is the map of strings at path; values that are not
// strings are left out.
func NestedStringMap(m map[string]any, path ...string) map[string]string {
	mm, ok := Nested(m, path...).(map[string]any)
	if !ok {
		return nil
	}
	out := make(map[string]string, len(mm))
	for k, v := range mm {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

// NestedStrings is the list of strings at path; other values are left out.
func NestedStrings(m map[string]any, path ...string) []string {
	var out []string
	for _, v := range NestedSlice(m, path...) {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func (o Object) meta(f string) string { return NestedString(o, "metadata", f) }

// APIVersion, Kind, Name, Namespace and ResourceVersion are the object's.
func (o Object) APIVersion() string      { s, _ := o["apiVersion"].(string); return s }
func (o Object) Kind() string            { s, _ := o["kind"].(string); return s }
func (o Object) Name() string            { return o.meta("name") }
func (o Object) Namespace() string       { return o.meta("namespace") }
func (o Object) ResourceVersion() string { return o.meta("resourceVersion") }

// Labels and Annotations are the object's (nil when none).
func (o Object) Labels() map[string]string { return NestedStringMap(o, "metadata", "labels") }
func (o Object) Annotations() map[string]string {
	return NestedStringMap(o, "metadata", "annotations")
}

// Generation is metadata.generation (0 when absent).
func (o Object) Generation() int64 {
	n, _ := Nested(o, "metadata", "generation").(int64)
	return n
}

// CreationTimestamp is metadata.creationTimestamp (zero when absent).
func (o Object) CreationTimestamp() time.Time {
	t, _ := time.Parse(time.RFC3339, o.meta("creationTimestamp"))
	return t
}

// SetResourceVersion sets metadata.resourceVersion.
func (o Object) SetResourceVersion(rv string) {
	m, ok := o["metadata"].(map[string]any)
	if !ok {
		m = map[string]any{}
		o["metadata"] = m
	}
	m["resourceVersion"] = rv
}

// Key is the object's store key: namespace/name, or name when
// cluster-scoped (client-go's MetaNamespaceKeyFunc).
func (o Object) Key() string { return Key(o.Namespace(), o.Name()) }

// Key is the store key of the object ns/name.
func Key(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// Decode decodes one JSON value into v, integers as int64 (see Object).
func Decode(data []byte, v any) error { return decode(bytes.NewReader(data), v) }

// decode reads one JSON value from r into v (a *Object, or a struct
// holding Objects), turning json.Number into int64 or float64.
func decode(r io.Reader, v any) error {
	d := json.NewDecoder(r)
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	switch t := v.(type) {
	case *Object:
		numbers(map[string]any(*t))
	case *map[string]any:
		numbers(*t)
	default:
		walkObjects(v)
	}
	return nil
}

// walkObjects converts the numbers of the Objects a decoded struct holds.
func walkObjects(v any) {
	switch t := v.(type) {
	case *listPage:
		for _, it := range t.Items {
			numbers(it)
		}
	case *rawEvent:
		numbers(t.Object)
	}
}

// numbers replaces every json.Number under m in place.
func numbers(m map[string]any) {
	for k, v := range m {
		m[k] = number(v)
	}
}

func number(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return i
		}
		f, _ := strconv.ParseFloat(string(t), 64)
		return f
	case map[string]any:
		numbers(t)
	case []any:
		for i := range t {
			t[i] = number(t[i])
		}
	}
	return v
}
