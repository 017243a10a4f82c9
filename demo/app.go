package demo

import (
	"bytes"
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

// RunApp runs one demo service's app: role is frontend, orders, inventory,
// notifier or loadgen. It listens on $PORT and calls other services through the sidecar
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
			// The event flow: every order is published as order.created
			// (keyed by user, so one user's events arrive in order) and
			// the notifier service receives it by callback.
			publishOrder(r, r.PathValue("id"), id)
			reply(w, map[string]any{"service": "orders", "order": r.PathValue("id"), "stock": stock})
		})
	case "inventory":
		mux.HandleFunc("/stock/{sku}", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			reply(w, map[string]any{"service": "inventory", "sku": r.PathValue("sku"), "available": rand.IntN(100)})
		})
	case "notifier":
		mux.HandleFunc("POST /events/order-created", func(w http.ResponseWriter, r *http.Request) {
			var ev map[string]any
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&ev); err != nil {
				// Not an order: retrying will not make it one.
				w.Write([]byte(`{"status":"DEADLETTER"}`))
				return
			}
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) // "sending the e-mail"
			w.Write([]byte(`{"status":"SUCCESS"}`))
		})
	case "loadgen":
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("loadgen\n")) })
	default:
		return fmt.Errorf("unknown demo role %q (valid: frontend, orders, inventory, notifier, loadgen)", role)
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

// drive sends requests to the frontend at a steady rate, each as one of
// demoUsers users: enough keys for a hash algorithm to spread, few enough
// that the shares it gives each instance visibly differ from round robin's.
const demoUsers = 6

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
			req.Header.Set("x-user-id", "user-"+strconv.Itoa(rand.IntN(demoUsers)))
			resp, err := client.Do(req)
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
}

// publishClient posts to the sidecar's own publish endpoint on loopback
// (no proxy: NO_PROXY covers it, and this says so explicitly).
var publishClient = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}}

// publishing bounds the publishes in flight: when the broker is slow or
// away, orders go on and events beyond the bound are dropped (and logged).
var publishing = make(chan struct{}, 64)

// publishOrder publishes order.created through the sidecar
// ($WEFT_PUBLISH_URL), carrying the request's trace context so the
// delivery to the notifier joins the order's trace. It does not hold up the
// order: the publish runs after the handler returns, and a failed publish
// is logged, not fatal to the order.
func publishOrder(r *http.Request, order, instance string) {
	base := os.Getenv("WEFT_PUBLISH_URL")
	if base == "" {
		return
	}
	user := r.Header.Get("x-user-id")
	body, _ := json.Marshal(map[string]any{"order": order, "user": user, "by": instance, "at": time.Now().UTC().Format(time.RFC3339Nano)})
	req, _ := http.NewRequestWithContext(context.WithoutCancel(r.Context()), http.MethodPost, base+"/order.created", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.Header.Set("X-Weft-Key", user)
	}
	for _, h := range TraceHeaders {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	select {
	case publishing <- struct{}{}:
	default:
		fmt.Fprintln(os.Stderr, "publish order.created: too many publishes in flight; event dropped")
		return
	}
	go func() {
		defer func() { <-publishing }()
		resp, err := publishClient.Do(req)
		if err != nil {
			fmt.Fprintln(os.Stderr, "publish order.created:", err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			fmt.Fprintf(os.Stderr, "publish order.created: %s %s\n", resp.Status, msg)
		}
	}()
}
