// Package tracing is a sidecar's part in distributed tracing: it reads the
// caller's trace context (W3C Trace Context, or B3), starts a span for each
// request it proxies — a client span in the caller's sidecar, a server span
// in the callee's — writes the new context into the request it forwards, and
// exports finished spans with the OpenTelemetry SDK over OTLP.
//
// Export is asynchronous and bounded: spans go to a batch processor with a
// fixed queue that drops when full, and export errors are logged, never
// returned to a request. An unreachable collector costs a request nothing.
package tracing

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"
)

// Disabled is the --otlp-endpoint value that turns export (and so tracing)
// off.
const Disabled = "none"

// DefaultSampling is the ratio of new traces a sidecar samples unless told
// otherwise: enough to see every path of a busy mesh, cheap enough to leave on.
const DefaultSampling = 0.01

// Defaults of the export pipeline.
const (
	DefaultQueueSize     = 2048
	DefaultBatchSize     = 512
	DefaultBatchTimeout  = time.Second
	DefaultExportTimeout = 5 * time.Second
)

// Config configures a Tracer.
type Config struct {
	Service    string
	InstanceID string
	// Endpoint is where spans go: http(s)://host:port[/path] for OTLP/HTTP
	// (path defaults to /v1/traces), grpc://host:port (or grpcs://) for
	// OTLP/gRPC, Disabled for nowhere. Empty: ask EndpointFunc at each
	// export (the control plane's advertised receiver).
	Endpoint     string
	EndpointFunc func() string
	// TLS, when set, is the TLS configuration for https:// and grpcs://
	// endpoints (a sidecar verifies the control plane's receiver by the
	// mesh CA); nil: the system's roots.
	TLS func() *tls.Config
	// Token, when set, is asked at each export for a bearer token to send
	// (Authorization: Bearer …); "" sends none. A sidecar gives the one the
	// control plane's receiver wants only while exporting to it.
	Token func() string
	// Sampling is the ratio of new traces sampled, 0..1. A request that
	// arrives with a sampled (or not sampled) trace context keeps that
	// decision. 0 turns tracing off in this sidecar.
	Sampling      float64
	QueueSize     int
	BatchTimeout  time.Duration
	ExportTimeout time.Duration
	Logger        *slog.Logger
}

// Tracer starts spans for proxied requests. A nil *Tracer is valid and
// traces nothing.
type Tracer struct {
	ratio  uint64 // a new trace is sampled when its id's low 63 bits are below this
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	w3c    propagation.TraceContext
	b3     propagation.TextMapPropagator // extracts either encoding
	b3one  propagation.TextMapPropagator // injects "b3"
	b3many propagation.TextMapPropagator // injects x-b3-*
	exp    *lazyExporter
}

// New validates cfg and returns a Tracer, or nil (and no error) when
// tracing is off: sampling 0 or endpoint Disabled.
func New(cfg Config) (*Tracer, error) {
	if cfg.Sampling < 0 || cfg.Sampling > 1 {
		return nil, fmt.Errorf("--trace-sampling %v: want a ratio from 0 to 1", cfg.Sampling)
	}
	if cfg.Endpoint != "" && cfg.Endpoint != Disabled {
		if _, err := ParseEndpoint(cfg.Endpoint); err != nil {
			return nil, fmt.Errorf("--otlp-endpoint: %w", err)
		}
	}
	if cfg.Sampling == 0 || cfg.Endpoint == Disabled {
		return nil, nil
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = DefaultBatchTimeout
	}
	if cfg.ExportTimeout <= 0 {
		cfg.ExportTimeout = DefaultExportTimeout
	}
	endpoint := func() string { return cfg.Endpoint }
	if cfg.Endpoint == "" {
		endpoint = cfg.EndpointFunc
		if endpoint == nil {
			endpoint = func() string { return "" }
		}
	}
	token := cfg.Token
	if token == nil {
		token = func() string { return "" }
	}
	exp := &lazyExporter{endpoint: endpoint, token: token, timeout: cfg.ExportTimeout, log: cfg.Logger, tls: cfg.TLS}
	res := resource.NewSchemaless(
		attribute.String("service.name", cfg.Service),
		attribute.String("service.instance.id", cfg.InstanceID),
		attribute.String("telemetry.sdk.name", "weft"),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithIDGenerator(idGenerator{}),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.Sampling))),
		// Never WithBlocking: a full queue drops spans rather than wait.
		sdktrace.WithBatcher(exp,
			sdktrace.WithMaxQueueSize(cfg.QueueSize),
			sdktrace.WithMaxExportBatchSize(min(DefaultBatchSize, cfg.QueueSize)),
			sdktrace.WithBatchTimeout(cfg.BatchTimeout),
			sdktrace.WithExportTimeout(cfg.ExportTimeout)),
	)
	return &Tracer{
		ratio:  sampleBound(cfg.Sampling),
		tp:     tp,
		tracer: tp.Tracer("github.com/weftmesh/weft/proxy"),
		b3:     b3.New(),
		b3one:  b3.New(b3.WithInjectEncoding(b3.B3SingleHeader)),
		b3many: b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader)),
		exp:    exp,
	}, nil
}

// Shutdown exports what is queued (bounded by ctx) and stops the exporter.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// ForceFlush exports what is queued now (tests, shutdown paths).
func (t *Tracer) ForceFlush(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.ForceFlush(ctx)
}

// Encoding says which trace headers a request carried, so the context
// written back uses what the app understands.
type Encoding uint8

const (
	EncodingNone Encoding = 0
	EncodingW3C  Encoding = 1 << iota
	EncodingB3Single
	EncodingB3Multi
)

// Extract returns ctx with the remote span context the headers carry (W3C
// wins over B3 when both are present) and which encodings were present.
func (t *Tracer) Extract(ctx context.Context, h http.Header) (context.Context, Encoding) {
	enc := encodings(h)
	if enc == EncodingNone {
		return ctx, enc
	}
	c := Carrier(h)
	if enc&(EncodingB3Single|EncodingB3Multi) != 0 {
		ctx = t.b3.Extract(ctx, c)
	}
	if enc&EncodingW3C != 0 {
		ctx = t.w3c.Extract(ctx, c)
	}
	return ctx, enc
}

// Start starts a span of kind as a child of the context in ctx.
func (t *Tracer) Start(ctx context.Context, name string, kind trace.SpanKind, start time.Time) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithTimestamp(start))
}

// Inject writes the span context in ctx into h: always W3C traceparent (and
// tracestate), plus B3 in the encodings the inbound request used, so a
// B3-only app keeps following the trace.
func (t *Tracer) Inject(ctx context.Context, h http.Header, enc Encoding) {
	c := Carrier(h)
	t.w3c.Inject(ctx, c)
	if enc&EncodingB3Single != 0 {
		t.b3one.Inject(ctx, c)
	}
	if enc&EncodingB3Multi != 0 {
		t.b3many.Inject(ctx, c)
	}
}

// Carrier adapts an http.Header to the propagators without allocating a
// canonical key for each header they read or write.
type Carrier http.Header

var canonical = map[string]string{
	"traceparent":       "Traceparent",
	"tracestate":        "Tracestate",
	"b3":                "B3",
	"x-b3-traceid":      "X-B3-Traceid",
	"x-b3-spanid":       "X-B3-Spanid",
	"x-b3-parentspanid": "X-B3-Parentspanid",
	"x-b3-sampled":      "X-B3-Sampled",
	"x-b3-flags":        "X-B3-Flags",
}

func canon(k string) string {
	if c, ok := canonical[k]; ok {
		return c
	}
	return http.CanonicalHeaderKey(k)
}

func (c Carrier) Get(k string) string {
	if v := c[canon(k)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c Carrier) Set(k, v string) { c[canon(k)] = []string{v} }

func (c Carrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

var _ propagation.TextMapCarrier = Carrier(nil)

// Endpoint is a parsed --otlp-endpoint.
type Endpoint struct {
	GRPC     bool
	Insecure bool
	Host     string // host:port
	Path     string // OTLP/HTTP only
}

// ParseEndpoint parses http(s)://host:port[/path] or grpc(s)://host:port.
func ParseEndpoint(s string) (Endpoint, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return Endpoint{}, fmt.Errorf("%q: want http://host:port[/path] (OTLP/HTTP) or grpc://host:port (OTLP/gRPC), or %q", s, Disabled)
	}
	e := Endpoint{Host: u.Host}
	switch strings.ToLower(u.Scheme) {
	case "http":
		e.Insecure = true
	case "https":
	case "grpc":
		e.GRPC, e.Insecure = true, true
	case "grpcs":
		e.GRPC = true
	default:
		return Endpoint{}, fmt.Errorf("%q: scheme %q: want http, https, grpc or grpcs", s, u.Scheme)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return Endpoint{}, fmt.Errorf("%q: the URL needs a port", s)
	}
	if !e.GRPC {
		e.Path = u.Path
		if e.Path == "" || e.Path == "/" {
			e.Path = "/v1/traces"
		}
	}
	return e, nil
}

// lazyExporter resolves the endpoint at each export, so a sidecar can start
// before the control plane has told it where its receiver is, and builds
// the real exporter once per endpoint and token. Errors are logged (at most every
// few seconds), not returned: the SDK's global error handler stays quiet,
// and the batch processor simply moves on to the next batch.
type lazyExporter struct {
	endpoint func() string
	token    func() string
	timeout  time.Duration
	log      *slog.Logger
	tls      func() *tls.Config

	mu       sync.Mutex
	cur      string
	curToken string
	exp      sdktrace.SpanExporter
	lastWarn time.Time
	dropped  int
	stopped  bool
}

func (l *lazyExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return nil
	}
	ep := l.endpoint()
	if ep == "" || ep == Disabled {
		l.dropped += len(spans)
		return nil
	}
	tok := l.token()
	if ep != l.cur || tok != l.curToken || l.exp == nil {
		if l.exp != nil {
			_ = l.exp.Shutdown(ctx)
			l.exp = nil
		}
		exp, err := newExporter(ep, tok, l.timeout, l.tls)
		if err != nil {
			l.warnLocked("otlp endpoint unusable; dropping spans", ep, err)
			l.cur, l.curToken = ep, tok
			return nil
		}
		l.cur, l.curToken, l.exp = ep, tok, exp
		l.log.Info("exporting spans", "otlp_endpoint", ep)
	}
	if err := l.exp.ExportSpans(ctx, spans); err != nil {
		l.dropped += len(spans)
		l.warnLocked("span export failed; dropping the batch", ep, err)
	}
	return nil
}

func (l *lazyExporter) warnLocked(msg, ep string, err error) {
	if time.Since(l.lastWarn) < 10*time.Second {
		return
	}
	l.lastWarn = time.Now()
	l.log.Warn(msg, "otlp_endpoint", ep, "err", err, "spans_dropped_so_far", l.dropped)
}

func (l *lazyExporter) Shutdown(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if l.exp == nil {
		return nil
	}
	err := l.exp.Shutdown(ctx)
	l.exp = nil
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// newExporter builds the OTLP exporter for ep. Without a token the
// exporter's own environment (OTEL_EXPORTER_OTLP_HEADERS) still applies.
func newExporter(ep, token string, timeout time.Duration, tlsConfig func() *tls.Config) (sdktrace.SpanExporter, error) {
	e, err := ParseEndpoint(ep)
	if err != nil {
		return nil, err
	}
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	// Short retries: a batch that cannot go within the export timeout is
	// dropped; the queue behind it keeps dropping rather than growing.
	ctx := context.Background()
	if e.GRPC {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(e.Host), otlptracegrpc.WithTimeout(timeout),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: true, InitialInterval: 250 * time.Millisecond, MaxInterval: time.Second, MaxElapsedTime: timeout})}
		if auth != "" {
			opts = append(opts, otlptracegrpc.WithHeaders(map[string]string{"authorization": auth}))
		}
		if e.Insecure {
			opts = append(opts, otlptracegrpc.WithInsecure())
		} else if tlsConfig != nil {
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsConfig())))
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(e.Host), otlptracehttp.WithURLPath(e.Path), otlptracehttp.WithTimeout(timeout),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: true, InitialInterval: 250 * time.Millisecond, MaxInterval: time.Second, MaxElapsedTime: timeout})}
	if auth != "" {
		opts = append(opts, otlptracehttp.WithHeaders(map[string]string{"Authorization": auth}))
	}
	if e.Insecure {
		opts = append(opts, otlptracehttp.WithInsecure())
	} else if tlsConfig != nil {
		opts = append(opts, otlptracehttp.WithTLSClientConfig(tlsConfig()))
	}
	return otlptracehttp.New(ctx, opts...)
}
