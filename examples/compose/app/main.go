// Command app is the example application of examples/compose: one small
// static binary, two roles.
//
//	app serve --name orders-1 [--listen 127.0.0.1:8080] [--call http://orders/]
//
// answers every request with JSON {"instance": NAME, "downstream": {…}},
// where downstream is the answer of --call, made through the sidecar
// ($HTTP_PROXY); the trace headers of the request are copied onto the call.
//
//	app load --target http://frontend/ [--rate 50] [--report 1s]
//
// calls --target at a steady rate through $HTTP_PROXY and prints one JSON
// line per --report interval, {"time","ok","failed","instances":{NAME:n}}
// (every instance named anywhere in an answer is counted), and one line per
// failed request, {"time","start","error"}. The compose e2e test reads these
// lines; a person reads them with `docker compose logs -f loadgen`.
//
// It is not part of Weft: any app works behind a sidecar. It lives here so
// the example runs from a FROM scratch image with nothing pulled.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: app serve|load [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "load":
		err = load(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want serve or load", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

// traceHeaders are copied from the request being served onto the call it
// makes, so the mesh's spans join one trace.
var traceHeaders = []string{"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled"}

type answer struct {
	Instance   string  `json:"instance"`
	Downstream *answer `json:"downstream,omitempty"`
	Error      string  `json:"error,omitempty"`
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	name := fs.String("name", "", "instance name put in every answer (required)")
	listen := fs.String("listen", "127.0.0.1:8080", "listen address (the sidecar reaches the app on loopback)")
	call := fs.String("call", "", "URL called, through $HTTP_PROXY, for every request served")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return errors.New("serve: --name is required")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 64}}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		a := answer{Instance: *name}
		status := http.StatusOK
		if *call != "" {
			down, err := callDown(r, client, *call)
			if err != nil {
				a.Error, status = err.Error(), http.StatusBadGateway
			}
			a.Downstream = down
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(a)
	})
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Printf("%s listening on %s\n", *name, *listen)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func callDown(in *http.Request, client *http.Client, url string) (*answer, error) {
	req, err := http.NewRequestWithContext(in.Context(), http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	for _, k := range traceHeaders {
		if v := in.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("call %s: reading the answer: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("call %s: status %d (x-weft-error %q): %.200s", url, resp.StatusCode, resp.Header.Get("x-weft-error"), body)
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("call %s: answer is not JSON: %w", url, err)
	}
	return &a, nil
}

// report is one interval's line of `app load`.
type report struct {
	Time      time.Time      `json:"time"`
	OK        int            `json:"ok"`
	Failed    int            `json:"failed"`
	Instances map[string]int `json:"instances"`
}

// failure is one failed request's line of `app load`.
type failure struct {
	Time  time.Time `json:"time"`
	Start time.Time `json:"start"`
	Error string    `json:"error"`
}

func load(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	target := fs.String("target", "", "URL to call, through $HTTP_PROXY (required)")
	rate := fs.Int("rate", 50, "requests per second")
	every := fs.Duration("report", time.Second, "how often a counts line is printed")
	maxInFlight := fs.Int("max-in-flight", 64, "requests in flight at most; past it a tick is skipped and counted as failed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *target == "" {
		return errors.New("load: --target is required")
	}
	if *rate <= 0 || *rate > 10000 {
		return fmt.Errorf("load: --rate %d: want 1..10000", *rate)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: *maxInFlight}}
	var (
		mu  sync.Mutex
		cur = report{Instances: map[string]int{}}
		out = json.NewEncoder(os.Stdout)
	)
	fail := func(start time.Time, err error) {
		mu.Lock()
		defer mu.Unlock()
		cur.Failed++
		_ = out.Encode(failure{Time: time.Now().UTC(), Start: start.UTC(), Error: err.Error()})
	}
	slots := make(chan struct{}, *maxInFlight)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	rep := time.NewTicker(*every)
	defer rep.Stop()
	fmt.Printf("{\"loading\":%q,\"rate\":%d}\n", *target, *rate)
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-rep.C:
			mu.Lock()
			cur.Time = time.Now().UTC()
			_ = out.Encode(cur)
			cur = report{Instances: map[string]int{}}
			mu.Unlock()
		case <-tick.C:
			start := time.Now()
			select {
			case slots <- struct{}{}:
			default:
				fail(start, fmt.Errorf("%d requests already in flight", *maxInFlight))
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				a, err := get(client, *target)
				if err != nil {
					fail(start, err)
					return
				}
				mu.Lock()
				cur.OK++
				for ; a != nil; a = a.Downstream {
					cur.Instances[a.Instance]++
				}
				mu.Unlock()
			}()
		}
	}
}

func get(client *http.Client, url string) (*answer, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d (x-weft-error %q): %.300s", resp.StatusCode, resp.Header.Get("x-weft-error"), body)
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("answer is not JSON: %w", err)
	}
	return &a, nil
}
