package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// TraceHeaders are the headers an app forwards from its inbound request to
// its outbound calls so that a trace follows the call chain — the one thing
// Weft asks of an app.
var TraceHeaders = []string{"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-request-id"}

// RunApp runs one demo service's app: role is frontend, orders, inventory or
// loadgen. It listens on $PORT and calls other services through the sidecar
// named by $HTTP_PROXY, as any app in any language would.
func RunApp(ctx context.Context, role string, rate float64) error {
	port := os.Getenv("PORT")
	if port == "" {
		return errors.New("PORT is not set: run demo apps under `weft run`")
	}
	id := os.Getenv("WEFT_INSTANCE_ID")
	// The default transport reads HTTP_PROXY: every call goes through the sidecar.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 64}}
	call := func(r *http.Request, url string) (map[string]any, error) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, url, nil)
		for _, h := range TraceHeaders {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		if v := r.Header.Get("x-user-id"); v != "" {
			req.Header.Set("x-user-id", v)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var out map[string]any
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s %s", url, resp.Status, body)
		}
		_ = json.Unmarshal(body, &out)
		return out, nil
	}
	reply := func(w http.ResponseWriter, v map[string]any) {
		v["instance"] = id
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	switch role {
	case "frontend":
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			order, err := call(r, "http://orders/orders/"+strconv.Itoa(rand.IntN(1000)))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			reply(w, map[string]any{"service": "frontend", "order": order})
		})
	case "orders":
		mux.HandleFunc("/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
			stock, err := call(r, "http://inventory/stock/sku-"+r.PathValue("id"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			reply(w, map[string]any{"service": "orders", "order": r.PathValue("id"), "stock": stock})
		})
	case "inventory":
		mux.HandleFunc("/stock/{sku}", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			reply(w, map[string]any{"service": "inventory", "sku": r.PathValue("sku"), "available": rand.IntN(100)})
		})
	case "loadgen":
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("loadgen\n")) })
	default:
		return fmt.Errorf("unknown demo role %q (valid: frontend, orders, inventory, loadgen)", role)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if role == "loadgen" {
		go drive(ctx, client, rate)
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// drive sends requests to the frontend at a steady rate, each as a
// different user so hash algorithms have keys to spread.
func drive(ctx context.Context, client *http.Client, rate float64) {
	if rate <= 0 {
		rate = 20
	}
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	sem := make(chan struct{}, 32)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		select {
		case sem <- struct{}{}:
		default:
			continue // the mesh is slower than the rate: skip rather than pile up
		}
		go func() {
			defer func() { <-sem }()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://frontend/", nil)
			req.Header.Set("x-user-id", "user-"+strconv.Itoa(rand.IntN(50)))
			resp, err := client.Do(req)
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
}
