package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/messaging/deliver"
	"github.com/weftmesh/weft/sidecar"
	"github.com/weftmesh/weft/telemetry/tracing"
)

type sidecarFlags struct {
	cfg       sidecar.Config
	labels    []string
	upstreams []string
	subscribe []string
	// telemetry off is a hidden flag, for measuring what telemetry costs.
	telemetry bool
}

func (s *sidecarFlags) add(f *pflag.FlagSet, outboundDefault string) {
	f.StringVar(&s.cfg.Control, "control", sidecar.DefaultControl, "control plane gRPC address")
	f.StringVar(&s.cfg.Service, "service", "", "name of the service this instance belongs to (required)")
	f.IntVar(&s.cfg.AppPort, "app-port", 0, "the app's port on 127.0.0.1 (omit for a pure client)")
	f.BoolVar(&s.cfg.NoFastPath, "no-fast-path", false, "serve HTTP/1.1 with net/http instead of the allocation-free fast path")
	f.StringVar(&s.cfg.AppProtocol, "app-protocol", "auto", "what the app speaks: auto (gRPC over h2c, the rest HTTP/1.1), http1 or h2c")
	f.StringVar(&s.cfg.Inbound, "inbound", sidecar.DefaultInbound, "where other sidecars reach this instance (port 0: any free port)")
	f.StringVar(&s.cfg.Outbound, "outbound", outboundDefault, "where the app sends its calls (HTTP_PROXY); empty disables")
	f.StringVar(&s.cfg.Admin, "admin", sidecar.DefaultAdmin, "admin address (/ready, /config, /stats, /metrics, /debug/pprof); empty disables")
	f.StringVar(&s.cfg.Version, "version", "", "version of this instance, shown in the registry")
	f.StringArrayVar(&s.labels, "label", nil, "label k=v of this instance (repeatable)")
	f.StringVar(&s.cfg.Zone, "zone", "", "zone of this instance")
	f.StringVar(&s.cfg.ID, "id", "", "instance id (default: service name and a random suffix)")
	f.StringArrayVar(&s.upstreams, "upstream", nil, "NAME=127.0.0.1:PORT: a local port forwarding raw TCP to service NAME (repeatable)")
	f.DurationVar(&s.cfg.Drain, "drain", sidecar.DefaultDrain, "at shutdown, how long in-flight requests may take to finish")
	f.StringArrayVar(&s.subscribe, "subscribe", nil, "TOPIC=/path: POST the topic's messages to this path on the app (repeatable; a Subscription resource for the same topic wins)")
	f.StringVar(&s.cfg.OTLPEndpoint, "otlp-endpoint", "", "where spans are exported: http://HOST:PORT[/PATH] (OTLP/HTTP) or grpc://HOST:PORT (OTLP/gRPC); none disables tracing (default: the control plane's own receiver)")
	f.Float64Var(&s.cfg.TraceSampling, "trace-sampling", tracing.DefaultSampling, "ratio of new traces sampled, 0 to 1 (a request arriving with a trace context keeps its caller's decision; 0 disables tracing)")
	f.StringVar(&s.cfg.AccessLog, "access-log", "", "write one JSON line per request to this file (- for standard output); off by default")
	f.BoolVar(&s.cfg.ReleaseIdleMemory, "release-idle-memory", true, "when the sidecar falls quiet (under 2% of a core) after a burst or with over 4 MiB of free heap, collect, return the free heap to the OS and (with --trim-executable) trim the executable's pages; at most once a second")
	f.BoolVar(&s.cfg.TrimExecutable, "trim-executable", true, "after start-up and then every 30s, unmap the weft binary's read-only pages from this process (they stay in the page cache), so that only the pages in use count as resident (Linux)")
	f.IntVar(&s.cfg.AppPID, "app-pid", 0, "process id of the app, whose process tree's CPU use this instance reports to load_aware callers (weft run knows it)")
	f.StringVar(&s.cfg.LoadCgroup, "load-cgroup", "", "cgroup v2 directory of this instance (its container), or auto for the sidecar's own, whose CPU and memory pressure it reports to load_aware callers; wins over the app's pid")
	f.DurationVar(&s.cfg.Listen.ReadHeaderTimeout, "read-header-timeout", sidecar.DefaultReadHeaderTimeout, "outbound and inbound listeners: how long a client has from the first byte of a request head to its end (slow clients are cut off)")
	f.DurationVar(&s.cfg.Listen.IdleTimeout, "idle-timeout", sidecar.DefaultIdleTimeout, "outbound and inbound listeners: how long a keep-alive connection may wait for its next request")
	f.IntVar(&s.cfg.Listen.MaxConns, "max-connections", sidecar.DefaultMaxConns, "outbound and inbound listeners: open connections per listener; more are closed at once (weft_listener_rejected_total)")
	f.DurationVar(&s.cfg.Listen.WriteTimeout, "write-timeout", sidecar.DefaultWriteTimeout, "outbound and inbound listeners: how long a write to a client may make no progress (a client that stops reading is cut off)")
	f.DurationVar(&s.cfg.Listen.BodyTimeout, "read-body-timeout", sidecar.DefaultBodyTimeout, "outbound and inbound listeners: how long an HTTP/1.1 request body may stall; a slower body is answered 408")
	f.IntVar(&s.cfg.Listen.MinBodyRate, "min-body-rate", sidecar.DefaultMinBodyRate, "outbound and inbound listeners: the slowest average, in bytes per second, an HTTP/1.1 request body may keep after its first --read-body-timeout (0: no floor)")
	f.DurationVar(&s.cfg.Listen.TunnelIdle, "tunnel-idle-timeout", sidecar.DefaultTunnelIdle, "outbound and inbound listeners: how long a WebSocket or CONNECT tunnel may carry nothing either way before it is closed")
	f.BoolVar(&s.telemetry, "telemetry", true, "record per-request metrics, spans and access logs (false: only to measure their cost)")
	_ = f.MarkHidden("telemetry")
	addCaptureFlags(f, &s.cfg.Capture)
	addH2Flags(f, &s.cfg.H2)
	s.addSecurity(f)
}

func (s *sidecarFlags) config() (sidecar.Config, error) {
	cfg := s.cfg
	cfg.NoTelemetry = !s.telemetry
	// The target tuneSidecarGC set at start, which the sidecar lowers
	// while it allocates slowly (sidecar/gctarget.go); none when GOGC is set.
	cfg.GCPercent, _ = sidecarGC(os.Args, os.LookupEnv)
	if err := cfg.H2.Validate(); err != nil {
		return cfg, err
	}
	if cfg.Listen.ReadHeaderTimeout <= 0 {
		return cfg, fmt.Errorf("--read-header-timeout %s: want a positive duration", cfg.Listen.ReadHeaderTimeout)
	}
	if cfg.Listen.IdleTimeout <= 0 {
		return cfg, fmt.Errorf("--idle-timeout %s: want a positive duration", cfg.Listen.IdleTimeout)
	}
	if cfg.Listen.MaxConns <= 0 {
		return cfg, fmt.Errorf("--max-connections %d: want a positive number", cfg.Listen.MaxConns)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--write-timeout", cfg.Listen.WriteTimeout}, {"--read-body-timeout", cfg.Listen.BodyTimeout}, {"--tunnel-idle-timeout", cfg.Listen.TunnelIdle}} {
		if d.v <= 0 {
			return cfg, fmt.Errorf("%s %s: want a positive duration", d.flag, d.v)
		}
	}
	if cfg.Listen.MinBodyRate < 0 {
		return cfg, fmt.Errorf("--min-body-rate %d: want 0 (no floor) or a positive number of bytes per second", cfg.Listen.MinBodyRate)
	}
	if cfg.Service == "" {
		return cfg, fmt.Errorf("--service is required")
	}
	var err error
	if cfg.Labels, err = sidecar.ParseLabels(s.labels, "--label"); err != nil {
		return cfg, err
	}
	cfg.Upstreams = map[string]string{}
	for _, u := range s.upstreams {
		name, addr, ok := strings.Cut(u, "=")
		if !ok || name == "" || addr == "" {
			return cfg, fmt.Errorf("--upstream %q: want NAME=127.0.0.1:PORT", u)
		}
		if _, dup := cfg.Upstreams[name]; dup {
			return cfg, fmt.Errorf("--upstream %s given twice", name)
		}
		cfg.Upstreams[name] = addr
	}
	if cfg.Subscribe, err = deliver.ParseFlags(s.subscribe); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func newSidecarCmd(g *globalFlags) *cobra.Command {
	sf := &sidecarFlags{}
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Run the sidecar of one app instance (the app runs separately)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := sf.config()
			if err != nil {
				return err
			}
			if cfg.Logger, err = g.logger(); err != nil {
				return err
			}
			cfg.Logger = cfg.Logger.With("service", cfg.Service)
			sc, err := sidecar.New(cfg)
			if err != nil {
				return sidecarPortHint(err)
			}
			return sc.Run(cmd.Context())
		},
	}
	sf.add(cmd.Flags(), sidecar.DefaultOutbound)
	return cmd
}
