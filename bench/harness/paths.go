package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// Path names.
const (
	PathDirect = "direct"
	// PathWeft is the sidecar pair as weft runs by default: mutual TLS
	// between the two sidecars (strict). PathWeftMTLS names it too.
	PathWeft     = "weft"
	PathWeftMTLS = "weft-mtls"
	// PathWeftPlain is the same pair with --mtls off (plaintext between
	// the sidecars): beside PathWeft it shows what mTLS costs.
	PathWeftPlain = "weft-plain"
	// PathWeftPolicy is the weft path with a TrafficPolicy that sets
	// retries, outlier detection and a circuit breaker on the backend: none
	// of them fires on healthy traffic, so it shows what the request
	// pipeline costs when policy is configured but idle.
	PathWeftPolicy = "weft-policy"
	PathHAProxy    = "haproxy"
	PathNginx      = "nginx"
)

// AllPaths is every path, in the order rounds interleave them.
// The gRPC paths (grpc.go) come after the HTTP/1.1 ones.
var AllPaths = append([]string{PathDirect, PathWeft, PathWeftPlain, PathWeftPolicy, PathHAProxy, PathNginx}, GRPCPaths...)

// Env is what a path needs to start.
type Env struct {
	Starter     *Starter
	Dir         string // scratch directory for configs, pid files, data
	BackendAddr string
	// GRPCBackendAddr is the gRPC backend's (h2c), when a gRPC path runs.
	GRPCBackendAddr string
	ProxyCPU        string // taskset list for the proxies under test ("" = unpinned)
	// AuxCPU is where a path's auxiliary processes run (weft's control
	// plane): "" = with the proxies, on ProxyCPU.
	AuxCPU string
	// GCTrace runs every Go process of a path (and the backend) with
	// GODEBUG=gctrace=1 and stamps their log lines (ProcSpec.Stamp), so that
	// each collection can be lined up with the slow requests.
	GCTrace    bool
	WeftBin    string
	HAProxyBin string
	NginxBin   string
	ReadyWait  time.Duration // how long a path may take to answer 200
}

// Topology is a started path.
type Topology struct {
	Target Target
	// Hops are the proxy processes under test, in request order: their CPU
	// and RSS are the proxy's cost. Each is the root of its process tree.
	Hops []*Proc
	// Aux are other processes of the path (weft's control plane), reported
	// separately.
	Aux []*Proc
	// Metrics are the hops' Prometheus /metrics URLs, in Hops' order ("" or
	// absent where a hop has none).
	Metrics []string
	procs   []*Proc
}

// Stop stops the path's processes.
func (t *Topology) Stop(s *Starter) {
	for i := len(t.procs) - 1; i >= 0; i-- {
		t.procs[i].Stop(2 * time.Second)
	}
	s.Forget(t.procs...)
}

// Dead returns an error naming a process of the path that has exited.
func (t *Topology) Dead() error {
	for _, p := range t.procs {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s exited (%v): %s", p.Name, err, p.LogTail(6))
		}
	}
	return nil
}

// StartPath starts the named path, retrying twice with fresh ports when a
// process fails to come up (a port taken between probe and bind, say).
func StartPath(ctx context.Context, name string, env *Env, round int) (*Topology, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir := filepath.Join(env.Dir, fmt.Sprintf("%s-r%d-a%d", name, round, attempt))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		var t *Topology
		var err error
		switch name {
		case PathGRPCDirect, PathGRPCWeft, PathGRPCHAProxy, PathGRPCStreamDirect, PathGRPCStreamWeft, PathGRPCStreamHAProxy:
			t, err = startPathGRPC(ctx, name, env, dir)
		case PathDirect:
			t = &Topology{Target: Target{Addr: env.BackendAddr, Host: "backend"}}
		case PathHAProxy:
			t, err = startHAProxy(ctx, env, dir, name)
		case PathNginx:
			t, err = startNginx(ctx, env, dir, name)
		case PathWeft, PathWeftMTLS, PathWeftPlain, PathWeftPolicy:
			t, err = startWeft(ctx, env, dir, name)
		default:
			return nil, fmt.Errorf("unknown path %q", name)
		}
		if err == nil {
			return t, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return nil, lastErr
}

// readyThrough waits until a GET through the whole path answers 200.
func readyThrough(ctx context.Context, env *Env, t *Topology) error {
	wait := env.ReadyWait
	if wait <= 0 {
		wait = 30 * time.Second
	}
	if t.Target.Proto != ProtoHTTP1 {
		return waitGRPC(ctx, t.Target, wait, t.procs...)
	}
	return WaitHTTP(ctx, t.Target.url(), t.Target.Host, wait, t.procs...)
}

func writeTemplate(path string, tmpl *template.Template, data any) error {
	var b strings.Builder
	if err := tmpl.Execute(&b, data); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// hop is one proxy instance of a two-hop chain.
type hop struct {
	Name     string
	Listen   string
	Upstream string
	Dir      string
	Root     bool // running as root (nginx: set the worker user)
	// Proto is appended to HAProxy's bind and server lines (" proto h2":
	// h2c on both sides).
	Proto string
}

var haproxyTmpl = template.Must(template.New("haproxy").Parse(`# meshbench: {{.Name}}
global
    nbthread 1
    maxconn 4096
    pidfile {{.Dir}}/{{.Name}}.pid
    # no "log" line: nothing is logged, to disk or syslog

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s

frontend in
    bind {{.Listen}}{{.Proto}}
    default_backend next

backend next
    server next {{.Upstream}}{{.Proto}}
`))

func startHAProxy(ctx context.Context, env *Env, dir, name string) (*Topology, error) {
	return startHAProxyWith(ctx, env, dir, name, env.BackendAddr, "")
}

// startHAProxyWith starts a pair of HAProxy hops in front of backend, with
// proto appended to every bind and server line.
func startHAProxyWith(ctx context.Context, env *Env, dir, name, backend, proto string) (*Topology, error) {
	if env.HAProxyBin == "" {
		return nil, fmt.Errorf("haproxy not found (run scripts/deps.sh)")
	}
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	hops := []hop{
		{Name: name + "-1", Listen: addr(ports[0]), Upstream: addr(ports[1]), Dir: dir, Proto: proto},
		{Name: name + "-2", Listen: addr(ports[1]), Upstream: backend, Dir: dir, Proto: proto},
	}
	t := &Topology{Target: Target{Addr: hops[0].Listen, Host: "backend", Proto: protoOf(name)}}
	// Start the far hop first so the near one never sees a refused upstream.
	for i := len(hops) - 1; i >= 0; i-- {
		h := hops[i]
		cfg := filepath.Join(dir, h.Name+".cfg")
		if err := writeTemplate(cfg, haproxyTmpl, h); err != nil {
			return nil, err
		}
		// -db: stay in the foreground, no daemon, no master-worker.
		p, err := env.Starter.Start(ProcSpec{Name: h.Name, Argv: []string{env.HAProxyBin, "-db", "-f", cfg}, Dir: dir, CPU: env.ProxyCPU})
		if err != nil {
			t.Stop(env.Starter)
			return nil, err
		}
		t.procs = append(t.procs, p)
	}
	t.Hops = []*Proc{t.procs[1], t.procs[0]}
	if err := readyThrough(ctx, env, t); err != nil {
		t.Stop(env.Starter)
		return nil, err
	}
	return t, nil
}

var nginxTmpl = template.Must(template.New("nginx").Parse(`# meshbench: {{.Name}}
{{if .Root}}user root root;
{{end}}daemon off;
master_process on;
worker_processes 1;
pid {{.Dir}}/{{.Name}}.pid;
error_log {{.Dir}}/{{.Name}}.error.log warn;

events {
    worker_connections 8192;
    multi_accept on;
}

http {
    access_log off;
    client_body_temp_path {{.Dir}}/{{.Name}}-body;
    proxy_temp_path {{.Dir}}/{{.Name}}-proxy;
    fastcgi_temp_path {{.Dir}}/{{.Name}}-fastcgi;
    uwsgi_temp_path {{.Dir}}/{{.Name}}-uwsgi;
    scgi_temp_path {{.Dir}}/{{.Name}}-scgi;
    keepalive_timeout 60s;
    keepalive_requests 10000000;

    upstream next {
        server {{.Upstream}};
        keepalive 128;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }

    server {
        listen {{.Listen}};
        location / {
            proxy_pass http://next;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
    }
}
`))

func startNginx(ctx context.Context, env *Env, dir, name string) (*Topology, error) {
	if env.NginxBin == "" {
		return nil, fmt.Errorf("nginx not found (run scripts/deps.sh)")
	}
	ports, err := FreePorts(2)
	if err != nil {
		return nil, err
	}
	root := os.Geteuid() == 0
	hops := []hop{
		{Name: name + "-1", Listen: addr(ports[0]), Upstream: addr(ports[1]), Dir: dir, Root: root},
		{Name: name + "-2", Listen: addr(ports[1]), Upstream: env.BackendAddr, Dir: dir, Root: root},
	}
	t := &Topology{Target: Target{Addr: hops[0].Listen, Host: "backend"}}
	for i := len(hops) - 1; i >= 0; i-- {
		h := hops[i]
		cfg := filepath.Join(dir, h.Name+".conf")
		if err := writeTemplate(cfg, nginxTmpl, h); err != nil {
			return nil, err
		}
		// -e: the error log before the configuration is read (the default
		// is under /var/log); -p: relative paths under dir.
		argv := []string{env.NginxBin, "-p", dir + "/", "-c", cfg, "-e", filepath.Join(dir, h.Name+".startup.log")}
		p, err := env.Starter.Start(ProcSpec{Name: h.Name, Argv: argv, Dir: dir, CPU: env.ProxyCPU})
		if err != nil {
			t.Stop(env.Starter)
			return nil, err
		}
		t.procs = append(t.procs, p)
	}
	t.Hops = []*Proc{t.procs[1], t.procs[0]}
	if err := readyThrough(ctx, env, t); err != nil {
		t.Stop(env.Starter)
		return nil, err
	}
	return t, nil
}

func startWeft(ctx context.Context, env *Env, dir, name string) (*Topology, error) {
	return startWeftWith(ctx, env, dir, name, env.BackendAddr)
}

// startWeftWith starts a control plane and the two sidecars in front of
// backend (the app of the server sidecar).
func startWeftWith(ctx context.Context, env *Env, dir, name, backend string) (*Topology, error) {
	if env.WeftBin == "" {
		return nil, fmt.Errorf("no weft binary given")
	}
	if _, err := exec.LookPath(env.WeftBin); err != nil {
		return nil, fmt.Errorf("weft binary: %w", err)
	}
	ports, err := FreePorts(7)
	if err != nil {
		return nil, err
	}
	grpcAddr, httpAddr := addr(ports[0]), addr(ports[1])
	inbound, serverOut, serverAdmin := addr(ports[2]), addr(ports[3]), addr(ports[4])
	clientOut, clientAdmin := addr(ports[5]), addr(ports[6])
	_, backendPort, _ := strings.Cut(backend, ":")
	weftEnv := []string{"GOMAXPROCS=1"}
	if env.GCTrace {
		weftEnv = append(weftEnv, "GODEBUG=gctrace=1")
	}
	auxCPU := env.AuxCPU
	if auxCPU == "" {
		auxCPU = env.ProxyCPU
	}
	wait := env.ReadyWait
	if wait <= 0 {
		wait = 30 * time.Second
	}

	t := &Topology{Target: Target{Addr: clientOut, Host: "backend", Proto: protoOf(name)}}
	fail := func(err error) (*Topology, error) {
		t.Stop(env.Starter)
		return nil, err
	}
	startOn := func(cpu, pname string, args ...string) (*Proc, error) {
		p, err := env.Starter.Start(ProcSpec{Name: pname, Argv: append([]string{env.WeftBin}, args...), Env: weftEnv, Dir: dir, CPU: cpu, Stamp: env.GCTrace})
		if err != nil {
			return nil, err
		}
		t.procs = append(t.procs, p)
		return p, nil
	}
	start := func(pname string, args ...string) (*Proc, error) { return startOn(env.ProxyCPU, pname, args...) }

	controlArgs := []string{"control", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--data-dir", filepath.Join(dir, "control-data")}
	if name == PathWeftPlain {
		controlArgs = append(controlArgs, "--mtls", "off")
	}
	control, err := startOn(auxCPU, name+"-control", controlArgs...)
	if err != nil {
		return fail(err)
	}
	if err := WaitHTTP(ctx, "http://"+httpAddr+"/healthz", "", wait, control); err != nil {
		return fail(fmt.Errorf("control plane: %w", err))
	}
	if name == PathWeftPolicy {
		if err := applyPolicy(ctx, env.WeftBin, dir, "http://"+httpAddr); err != nil {
			return fail(err)
		}
	}
	server, err := start(name+"-server-sidecar", "sidecar", "--control", grpcAddr, "--service", "backend",
		"--app-port", backendPort, "--inbound", inbound, "--outbound", serverOut, "--admin", serverAdmin)
	if err != nil {
		return fail(err)
	}
	client, err := start(name+"-client-sidecar", "sidecar", "--control", grpcAddr, "--service", "loadgen",
		"--outbound", clientOut, "--admin", clientAdmin)
	if err != nil {
		return fail(err)
	}
	for _, s := range []struct {
		p     *Proc
		admin string
	}{{server, serverAdmin}, {client, clientAdmin}} {
		if err := WaitHTTP(ctx, "http://"+s.admin+"/ready", "", wait, t.procs...); err != nil {
			return fail(fmt.Errorf("%s: %w", s.p.Name, err))
		}
	}
	t.Hops = []*Proc{client, server}
	t.Metrics = []string{"http://" + clientAdmin + "/metrics", "http://" + serverAdmin + "/metrics"}
	t.Aux = []*Proc{control}
	if err := readyThrough(ctx, env, t); err != nil {
		return fail(fmt.Errorf("weft path: %w", err))
	}
	return t, nil
}

// resiliencePolicy is what the weft-policy path applies: every resilience
// feature of the pipeline on, at values healthy traffic never trips.
const resiliencePolicy = `apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: backend}
spec:
  service: backend
  retries:
    attempts: 2
    retryOn: [connect-failure, reset, gateway-error, 5xx]
    perTryTimeout: 2s
    budget: {ratio: 0.2, minPerSecond: 10}
  outlierDetection:
    consecutive5xx: 5
    interval: 1s
    baseEjectionTime: 30s
    maxEjectionPercent: 50
  circuitBreaker:
    maxConnections: 10000
    maxPendingRequests: 10000
    maxRequests: 10000
`

func applyPolicy(ctx context.Context, weft, dir, server string) error {
	f := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(f, []byte(resiliencePolicy), 0o644); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, weft, "apply", "-f", f, "--server", server).CombinedOutput()
	if err != nil {
		return fmt.Errorf("weft apply of the bench policy: %v: %s", err, out)
	}
	return nil
}
