package client

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestEventStream(t *testing.T) {
	in := `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","namespace":"n","resourceVersion":"5","generation":2},"spec":{"x":1.5}}}
{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"9"}}}

  {"type":"DELETED","object":{"metadata":{"name":"a","namespace":"n","resourceVersion":"10"}}}{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 1 (9)"}}`
	s := NewEventStream(strings.NewReader(in), MaxEventBytes)
	var got []string
	for {
		ev, err := s.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %s", ev.Type, ev.Object.Key(), ev.Object.ResourceVersion()))
		if ev.Type == Added {
			if g := ev.Object.Generation(); g != 2 {
				t.Errorf("generation %v, want int64 2", g)
			}
			if f, ok := Nested(ev.Object, "spec", "x").(float64); !ok || f != 1.5 {
				t.Errorf("spec.x = %#v, want float64 1.5", Nested(ev.Object, "spec", "x"))
			}
		}
		if ev.Type == Error && !IsGone(ev.Err()) {
			t.Errorf("error event %v is not Gone", ev.Err())
		}
	}
	want := []string{"ADDED n/a 5", "BOOKMARK  9", "DELETED n/a 10", "ERROR  "}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", got, want)
	}
}

func TestEventStreamErrors(t *testing.T) {
	big := `{"type":"ADDED","object":{"data":"` + strings.Repeat("x", 300) + `"}}`
	for _, tc := range []struct {
		name, in string
		max      int64
		word     string
	}{
		{"too large", big, 200, "larger than the limit"},
		{"second too large", `{"type":"ADDED","object":{}}` + "\n" + big, 200, "larger than the limit"},
		{"bad type", `{"type":"CHANGED","object":{}}`, 1 << 20, `type "CHANGED"`},
		{"no object", `{"type":"ADDED"}`, 1 << 20, "ADDED without an object"},
		{"object not an object", `{"type":"ADDED","object":[1]}`, 1 << 20, "malformed watch event"},
		{"cut", `{"type":"ADDED","object":{"a":`, 1 << 20, "cut in the middle"},
		{"not JSON", `hello`, 1 << 20, "malformed watch event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewEventStream(strings.NewReader(tc.in), tc.max)
			var err error
			for err == nil {
				_, err = s.Next()
			}
			if !strings.Contains(err.Error(), tc.word) {
				t.Errorf("err %v, want one saying %q", err, tc.word)
			}
		})
	}
}

// FuzzEventStream: any byte stream decodes to valid events or an error,
// never a panic, and no event is larger than the limit.
func FuzzEventStream(f *testing.F) {
	f.Add([]byte(`{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"1"}}}` + "\n"))
	f.Add([]byte(`{"type":"ERROR","object":{"kind":"Status","code":410}}`))
	f.Add([]byte(`{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"12"}}}{"type":"DELETED","object":{"a":[1,2.5,-3e9,{"b":null}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 512
		s := NewEventStream(strings.NewReader(string(data)), max)
		for range 100 {
			ev, err := s.Next()
			if err != nil {
				return
			}
			switch ev.Type {
			case Added, Modified, Deleted, Bookmark, Error:
			default:
				t.Fatalf("event of type %q", ev.Type)
			}
			if ev.Object == nil {
				t.Fatal("event without an object")
			}
			_ = ev.Object.Key()
			_ = ev.Err()
		}
	})
}
