// Package healthcheck probes a destination's instances actively, for
// outlier detection: an HTTP GET of a path through each instance's inbound
// sidecar (the same connection a request would use: mTLS when the mesh
// has it), or just a TCP connection to it. Its owner (discovery) runs one
// Run per destination with a health check and stops it with the
// destination; each result goes to Report (policy.Detector.ReportHealth).
package healthcheck

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Target is one instance to probe.
type Target struct {
	ID, Address string
}

// Config configures Run.
type Config struct {
	// Service is the destination's name (the Host of HTTP probes).
	Service string
	// Path to GET; "" probes with a TCP connection only.
	Path              string
	Interval, Timeout time.Duration
	// Dial opens a connection to an instance's inbound.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Targets lists the instances to probe now (ejected ones included).
	Targets func() []Target
	// Report gets every probe's result; why says what failed.
	Report func(id string, healthy bool, why string)
	// Source is the calling service, sent as x-weft-source.
	Source string
}

// maxConcurrent bounds the probes of one destination in flight at once.
const maxConcurrent = 16

// Run probes every target at once and then every Interval until ctx is
// done; it returns when its probes have.
func Run(ctx context.Context, cfg Config) {
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		round(ctx, cfg)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func round(ctx context.Context, cfg Config) {
	sem := make(chan struct{}, maxConcurrent)
	var wg sync.WaitGroup
	for _, tg := range cfg.Targets() {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := Probe(ctx, cfg, tg.Address)
			if ctx.Err() != nil {
				return // stopped: not the instance's fault
			}
			why := ""
			if err != nil {
				why = err.Error()
			}
			cfg.Report(tg.ID, err == nil, why)
		}()
	}
	wg.Wait()
}

// Probe checks one instance at addr: nil when healthy, else why not.
func Probe(ctx context.Context, cfg Config, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	conn, err := cfg.Dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer conn.Close()
	if cfg.Path == "" {
		return nil
	}
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	req := "GET " + cfg.Path + " HTTP/1.1\r\nHost: " + cfg.Service + "\r\nUser-Agent: weft-health-check\r\n"
	if cfg.Source != "" {
		req += "X-Weft-Source: " + cfg.Source + "\r\n"
	}
	req += "Connection: close\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return fmt.Errorf("GET %s: %w", cfg.Path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", cfg.Path, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		if e := resp.Header.Get("X-Weft-Error"); e != "" {
			return fmt.Errorf("GET %s: %s (%s)", cfg.Path, resp.Status, e)
		}
		return fmt.Errorf("GET %s: %s", cfg.Path, resp.Status)
	}
	return nil
}
