// Command msgapp is the subscriber app of the messaging end-to-end tests:
// it serves POST /events*, appends one JSON line per delivery to --record
// (written with one write call, so a kill -9 loses nothing recorded), and
// answers according to the body: "retry" → {"status":"RETRY"}, "fail" →
// 500, "dead" → {"status":"DEADLETTER"}, anything else → 200 (ack). Other
// paths answer 404. --delay slows every delivery (a slow subscriber).
// Batched callbacks (NDJSON) get a per-line results answer (see
// answerBatch).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type record struct {
	ID      string `json:"id"`
	Key     string `json:"key,omitempty"`
	Attempt int    `json:"attempt"`
	Body    string `json:"body"`
	Inst    string `json:"inst"`
	Overlap bool   `json:"overlap,omitempty"`
	Trace   string `json:"traceparent,omitempty"`
	Start   int64  `json:"start"` // unix ns when the delivery arrived
	At      int64  `json:"at"`    // unix ns when it was answered
	Path    string `json:"path"`
	Answer  string `json:"answer"`
	Batch   int    `json:"batch,omitempty"` // lines of the batched callback it came in
}

func main() {
	port := flag.String("port", os.Getenv("PORT"), "listen port on 127.0.0.1")
	recordPath := flag.String("record", "", "append one JSON line per delivery to this file")
	name := flag.String("name", "app", "instance name recorded")
	delay := flag.Duration("delay", 0, "time each delivery takes")
	retryEvery := flag.Int("retry-first-every", 0, "answer RETRY to every Nth first attempt (0: never)")
	failBatches := flag.Int("fail-first-batches", 0, "answer 500 to the first N batched callbacks")
	flag.Parse()
	f, err := os.OpenFile(*recordPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var mu sync.Mutex
	inFlight := map[string]bool{}
	firsts := 0
	mux := http.NewServeMux()
	batches := 0
	mux.HandleFunc("POST /events/", func(w http.ResponseWriter, r *http.Request) {
		start := time.Now().UnixNano()
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") == "application/x-ndjson" {
			mu.Lock()
			batches++
			failBatch := batches <= *failBatches
			mu.Unlock()
			lines := strings.Split(strings.TrimSpace(string(body)), "\n")
			recs := make([]record, 0, len(lines))
			for _, l := range lines {
				var m struct {
					ID, Key, Traceparent string
					Attempt              int
					Data                 []byte
				}
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					http.Error(w, "bad line: "+err.Error(), http.StatusBadRequest)
					return
				}
				recs = append(recs, record{ID: m.ID, Key: m.Key, Attempt: m.Attempt, Body: string(m.Data), Inst: *name, Start: start,
					Trace: m.Traceparent, Path: r.URL.Path, Batch: len(lines)})
			}
			answerBatch(w, recs, failBatch, *delay, func(rec *record) bool {
				firsts++
				return *retryEvery > 0 && rec.Attempt == 1 && firsts%*retryEvery == 0
			}, &mu, inFlight, f)
			return
		}
		key := r.Header.Get("X-Weft-Key")
		attempt, _ := strconv.Atoi(r.Header.Get("X-Weft-Attempt"))
		rec := record{ID: r.Header.Get("X-Weft-Message-Id"), Key: key, Attempt: attempt, Body: string(body), Inst: *name, Start: start,
			Trace: r.Header.Get("Traceparent"), Path: r.URL.Path}
		if key != "" {
			mu.Lock()
			rec.Overlap = inFlight[key]
			inFlight[key] = true
			mu.Unlock()
			defer func() { mu.Lock(); delete(inFlight, key); mu.Unlock() }()
		}
		if *delay > 0 {
			time.Sleep(*delay)
		}
		rec.At = time.Now().UnixNano()
		mu.Lock()
		firsts++
		n := firsts
		mu.Unlock()
		switch {
		case string(body) == "retry", *retryEvery > 0 && attempt == 1 && n%*retryEvery == 0:
			rec.Answer = "retry"
		case string(body) == "fail":
			rec.Answer = "fail"
		case string(body) == "dead":
			rec.Answer = "dead"
		default:
			rec.Answer = "ack"
		}
		line, _ := json.Marshal(rec)
		mu.Lock()
		_, _ = f.Write(append(line, '\n'))
		mu.Unlock()
		switch rec.Answer {
		case "retry":
			w.Write([]byte(`{"status":"RETRY"}`))
		case "fail":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "dead":
			w.Write([]byte(`{"status":"DEADLETTER"}`))
		default:
			w.Write([]byte(`{"status":"SUCCESS"}`))
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			attempt, _ := strconv.Atoi(r.Header.Get("X-Weft-Attempt"))
			line, _ := json.Marshal(record{ID: r.Header.Get("X-Weft-Message-Id"), Attempt: attempt, Inst: *name, Path: r.URL.Path, At: time.Now().UnixNano()})
			mu.Lock()
			_, _ = f.Write(append(line, '\n'))
			mu.Unlock()
		}
		http.NotFound(w, r)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + *port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// answerBatch processes a batched callback's records in line order, as the
// contract asks: "retry" (or retryFirst) → RETRY, and from a key's first
// RETRY on, the rest of that key's lines too; "dead" → DEADLETTER; a
// "fail" line (or failBatch) → 500 for the whole batch. It records every
// line, then answers {"results": [...]}.
func answerBatch(w http.ResponseWriter, recs []record, failBatch bool, delay time.Duration, retryFirst func(*record) bool,
	mu *sync.Mutex, inFlight map[string]bool, f *os.File) {
	// Overlap: a key of this batch in delivery in another callback.
	mu.Lock()
	for i := range recs {
		recs[i].Overlap = recs[i].Key != "" && inFlight[recs[i].Key]
	}
	for i := range recs {
		if recs[i].Key != "" {
			inFlight[recs[i].Key] = true
		}
	}
	mu.Unlock()
	if delay > 0 {
		time.Sleep(delay)
	}
	var out []byte
	results := make([]string, len(recs))
	failed := map[string]bool{}
	mu.Lock()
	for i := range recs {
		rec := &recs[i]
		rec.Start = time.Now().UnixNano() // lines are processed one after the other
		rec.At = rec.Start
		switch {
		case rec.Body == "fail":
			failBatch = true
		case rec.Key != "" && failed[rec.Key], rec.Body == "retry", retryFirst(rec):
			rec.Answer = "retry"
			failed[rec.Key] = true
			results[i] = `{"id":` + strconv.Quote(rec.ID) + `,"status":"RETRY"}`
		case rec.Body == "dead":
			rec.Answer = "dead"
			results[i] = `{"status":"DEADLETTER","reason":"dead body"}`
		default:
			rec.Answer = "ack"
			results[i] = `{"status":"SUCCESS"}`
		}
	}
	for i := range recs {
		if failBatch {
			recs[i].Answer = "fail"
		}
		line, _ := json.Marshal(recs[i])
		out = append(append(out, line...), '\n')
		delete(inFlight, recs[i].Key)
	}
	_, _ = f.Write(out)
	mu.Unlock()
	if failBatch {
		http.Error(w, "batch failed", http.StatusInternalServerError)
		return
	}
	w.Write([]byte(`{"results":[` + strings.Join(results, ",") + `]}`))
}
