package publish

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/messaging"
)

// FuzzParseBatch: a batch body comes from any app. ParseBatch either
// refuses it or returns between 1 and MaxBatchMessages messages, each
// within the payload limit, with a message id and only X-Msg-* headers
// of the app's.
func FuzzParseBatch(f *testing.F) {
	f.Add([]byte(`{"text":"hello","key":"u1","id":"a-1","contentType":"text/plain","headers":{"X-Msg-Tenant":"acme"}}`+"\n"+`{"data":"AAEC"}`), 64)
	f.Add([]byte("\n\n{\"text\":\"a\"}\r\n{\"text\":\"b\"}"), 8)
	f.Add([]byte(`{"text":"a","data":"YQ=="}`), 8)
	f.Add([]byte(`{"text":"a"} {"text":"b"}`), 8)
	f.Add([]byte(`{"headers":{"X-Msg-":"x","Authorization":"y"}}`), 8)
	f.Add([]byte(`{"key":"`+strings.Repeat("k", 300)+`"}`), 8)
	f.Add([]byte(`[1,2,3]`), 8)
	f.Add([]byte(strings.Repeat("{}\n", 1001)), 8)
	f.Fuzz(func(t *testing.T, body []byte, max int) {
		max = max%4096 + 1
		if max < 1 {
			max = -max + 1
		}
		msgs, err := ParseBatch(body, max)
		if err != nil {
			if msgs != nil {
				t.Fatalf("messages with an error: %v", err)
			}
			return
		}
		if len(msgs) == 0 || len(msgs) > MaxBatchMessages {
			t.Fatalf("%d messages", len(msgs))
		}
		for _, m := range msgs {
			if len(m.Body) > max {
				t.Fatalf("payload of %d bytes over %d", len(m.Body), max)
			}
			if m.Header.Get(messaging.HdrMsgID) == "" {
				t.Fatal("no message id")
			}
			if len(m.Header.Get(messaging.HdrKey)) > MaxKeyBytes {
				t.Fatal("key over the limit")
			}
			for k := range m.Header {
				switch {
				case strings.HasPrefix(k, messaging.HTTPHeaderPrefix), k == messaging.HdrMsgID, k == messaging.HdrID, k == messaging.HdrKey, k == messaging.HdrContentType:
				default:
					t.Fatalf("header %q from a batch line", k)
				}
			}
		}
	})
}
