package publish_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/weftmesh/weft/messaging/broker"
	"github.com/weftmesh/weft/messaging/publish"
)

// BenchmarkPublish: the publish endpoint against an embedded broker, 64
// requests in flight, one message per request or 50 per batch; ns/op and
// allocs/op are per message. In process (no sockets to the app), so the
// broker's storing dominates: under perf stat -e task-clock, 72 µs of CPU
// per message single, 62 batched, the broker included. What a batch saves
// is mostly the app's HTTP round trips, which bench/messaging measures.
func BenchmarkPublish(b *testing.B) {
	br, err := broker.New(broker.Config{Addr: "127.0.0.1:0", StoreDir: b.TempDir(), MaxPayload: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	p := newPublisher(b, br.URL, 1024)
	payload := strings.Repeat("x", 256)
	line := `{"text":"` + payload + `"}` + "\n"
	for _, per := range []int{1, 50} {
		name, path, body := "single", "/v1/publish/bench", payload
		if per > 1 {
			name, path, body = "batch50", publish.BatchPrefix+"bench", strings.Repeat(line, per)
		}
		b.Run(name, func(b *testing.B) {
			b.SetParallelism(32) // 64 in flight on 2 CPUs
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for n := 0; pb.Next(); n++ {
					if n%per != 0 {
						continue // a batch counts as per messages
					}
					w := httptest.NewRecorder()
					p.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
					if w.Code != 200 {
						b.Errorf("%d %s", w.Code, w.Body)
						return
					}
				}
			})
		})
	}
}
