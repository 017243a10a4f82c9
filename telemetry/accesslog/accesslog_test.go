package accesslog

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestAppend(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	tests := []struct {
		name   string
		e      Entry
		want   map[string]any
		absent []string
	}{
		{"full", Entry{Time: at, Reporter: "server", Source: "frontend", Destination: "orders", Method: "GET",
			Authority: "orders", Path: "/o/1", Protocol: "HTTP/2.0", Code: 200, GRPCStatus: "0", Duration: 1500 * time.Microsecond,
			Upstream: time.Millisecond, RequestBytes: 10, ResponseBytes: 20, TraceID: "t", SpanID: "s", RequestID: "r"},
			map[string]any{"time": "2026-01-02T03:04:05.000006Z", "reporter": "server", "response_code": 200.0, "duration_ms": 1.5,
				"upstream_ms": 1.0, "request_bytes": 10.0, "response_bytes": 20.0, "grpc_status": "0", "trace_id": "t"}, nil},
		{"empty fields omitted", Entry{Time: at, Reporter: "client", Code: 503, RequestBytes: -1},
			map[string]any{"response_code": 503.0}, []string{"request_bytes", "grpc_status", "trace_id", "weft_error", "path"}},
		{"hostile path", Entry{Time: at, Path: "/\"}\n\x00<b>\u2028\xff", RequestBytes: -1},
			map[string]any{"path": "/\"}\n\x00<b>\u2028\ufffd"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := Append(nil, &tt.e)
			if !bytes.HasSuffix(line, []byte("}\n")) || bytes.Count(line, []byte("\n")) != 1 {
				t.Fatalf("not one line: %q", line)
			}
			var got map[string]any
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %#v, want %#v", k, got[k], v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := got[k]; ok {
					t.Errorf("%s present, want omitted", k)
				}
			}
		})
	}
}

func TestLongPathCut(t *testing.T) {
	p := "/" + strings.Repeat("é", 3000)
	line := Append(nil, &Entry{Path: p, RequestBytes: -1})
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatal(err)
	}
	s := got["path"].(string)
	if len(s) > maxPath+len("…") || !strings.HasSuffix(s, "…") || !utf8.ValidString(s) {
		t.Fatalf("path cut to %d bytes, valid %v", len(s), utf8.ValidString(s))
	}
}

func TestLoggerDropsWhenFull(t *testing.T) {
	l := New(&bytes.Buffer{}, 4)
	for range 10 {
		l.Log(&Entry{})
	}
	if l.Dropped() != 6 {
		t.Fatalf("dropped %d, want 6 (queue 4, no writer)", l.Dropped())
	}
}

func TestRunWritesFileAndStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	l, err := Open(path, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	for i := range 100 {
		l.Log(&Entry{Code: 200 + i, RequestBytes: -1})
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if n := bytes.Count(b, []byte("\n")); n != 100 {
		t.Fatalf("%d lines written, want 100", n)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "no", "such", "dir", "x.log"), 0, nil); err == nil {
		t.Fatal("opening a file in a missing directory succeeded")
	}
}

// FuzzAppendString: any input becomes one valid JSON string that decodes
// to the input (invalid UTF-8 replaced), cut at the limit.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "\"\\", "\x00\x1f\x7f", "é", "\xff\xfe", "\u2028\u2029", strings.Repeat("ü", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		const limit = 64
		b := appendString(nil, s, limit)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q → %q: %v", s, b, err)
		}
		if bytes.ContainsAny(b, "\n\r") {
			t.Fatalf("newline in %q", b)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if len(s) <= limit && got != strings.ReplaceAll(want, "\ufffd\ufffd", "\ufffd") && got != want {
			// ToValidUTF8 folds runs of bad bytes; appendString replaces each.
			if strings.ReplaceAll(got, "\ufffd", "") != strings.ReplaceAll(want, "\ufffd", "") {
				t.Fatalf("%q decoded as %q", s, got)
			}
		}
		if len(s) > limit && !strings.HasSuffix(got, "…") {
			t.Fatalf("long %q not marked as cut: %q", s, got)
		}
	})
}
