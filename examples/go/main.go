// Command hello is a tiny HTTP app with no Weft code: run it under
// `weft run`.
//
//	GET /            says which service and instance answered
//	GET /call/NAME   calls service NAME (http://NAME/) and returns its answer;
//	                 net/http sends the call to $HTTP_PROXY, which `weft run`
//	                 points at this instance's sidecar, so NAME is found in the mesh.
package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	port := os.Getenv("PORT") // weft run passes the port to listen on
	if port == "" {
		port = "8000"
	}
	me := map[string]string{"service": os.Getenv("WEFT_SERVICE"), "instance": os.Getenv("WEFT_INSTANCE_ID"), "lang": "go"}
	client := &http.Client{Timeout: 10 * time.Second} // DefaultTransport honours HTTP_PROXY
	http.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(me)
	})
	http.HandleFunc("GET /call/{name}", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+r.PathValue("name")+"/", nil)
		// Keep the trace going: forward the trace headers of the request we serve.
		for _, h := range []string{"traceparent", "tracestate"} {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, `{"error":`+jsonString(err.Error())+`}`, http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(resp.Body)
		w.Header().Set("Content-Type", "application/json")
		if resp.StatusCode != http.StatusOK { // the mesh says why, in JSON
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(answer)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"from": me, "answer": json.RawMessage(strings.TrimSpace(string(answer)))})
	})
	log.Fatal(http.ListenAndServe("127.0.0.1:"+port, nil))
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
