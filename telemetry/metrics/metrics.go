// Package metrics holds a sidecar's Prometheus collectors. The proxy calls
// the Recorder once per finished request (and per TCP tunnel); the admin
// listener serves the registry on /metrics, where Prometheus or the control
// plane's aggregator scrapes it.
//
// Every label value is bounded: service names are checked and capped,
// response codes are known HTTP statuses or "other", and the number of
// distinct series has a cap past which requests land in one "other" series
// per reporter and status class. A flood of random paths, hosts or
// x-weft-source values cannot grow memory.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Reporter says whose side of a call recorded it.
type Reporter uint8

const (
	// Client is the caller's sidecar (outbound).
	Client Reporter = iota
	// Server is the callee's sidecar (inbound).
	Server
)

func (r Reporter) String() string {
	if r == Server {
		return "server"
	}
	return "client"
}

// Label values the recorder substitutes for values it does not keep.
const (
	// Unknown is a destination that is not a registered service, or a
	// source that did not say who it is.
	Unknown = "unknown"
	// Other is the overflow value: a name past the cap on distinct names, a
	// response code that is not a known HTTP status, any series past the
	// cap on series.
	Other = "other"
)

// Metric names (the contract with dashboards and the control plane).
const (
	RequestsTotal    = "weft_requests_total"
	RequestDuration  = "weft_request_duration_seconds"
	ProxyOverhead    = "weft_proxy_overhead_seconds"
	TCPConnections   = "weft_tcp_connections_total"
	TCPBytes         = "weft_tcp_bytes_total"
	SeriesOverflow   = "weft_metrics_series_overflow_total"
	LabelReporter    = "reporter"
	LabelSource      = "source_service"
	LabelDestination = "destination_service"
	LabelCode        = "response_code"
	LabelGRPCStatus  = "grpc_status"
	LabelDirection   = "direction"
)

// DurationBuckets are the request-duration histogram's upper bounds: 100 µs
// to 10 s, about three per decade.
var DurationBuckets = [...]float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// OverheadBuckets are the proxy-overhead histogram's upper bounds: 5 µs to
// 100 ms, finest where the mesh's own cost normally is (tens of µs).
var OverheadBuckets = []float64{.000005, .00001, .000015, .00002, .00003, .00004, .00005, .000075, .0001, .00015, .0002, .0003, .0005,
	.001, .0025, .005, .01, .025, .05, .1}

// Defaults for Options.
const (
	DefaultMaxSeries = 2000
	DefaultMaxNames  = 500
)

// Options bound what a Recorder keeps.
type Options struct {
	// MaxSeries bounds distinct request series (reporter, source,
	// destination, code, gRPC status).
	MaxSeries int
	// MaxNames bounds distinct service names seen in source and
	// destination labels together.
	MaxNames int
}

// Recorder records requests and TCP tunnels. Safe for concurrent use; the
// per-request path is a lock-free map load and two atomic adds once a
// series exists.
type Recorder struct {
	opts     Options
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	overhead [2]prometheus.Observer
	tcpConns *prometheus.CounterVec
	tcpBytes *prometheus.CounterVec
	overflow prometheus.Counter
	res      resilience

	// series is copied on write: readers take no lock.
	series atomic.Pointer[map[key]*series]

	mu    sync.Mutex // guards writes to series and names
	names map[string]struct{}
	count int // distinct series, not counting overflow ones
}

type key struct {
	rep      Reporter
	grpc     int8 // -1 not gRPC, 0..16, 17 other
	code     int16
	src, dst string
}

// Codes in a key: 0..599 a known status, codeOther anything else; overflow
// series use -10 - class so they never collide with a real key.
const codeOther = -1

type series struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// New returns a Recorder with its own registry (never the global one), with
// the Go runtime and process collectors registered beside Weft's own.
func New(o Options) *Recorder {
	if o.MaxSeries <= 0 {
		o.MaxSeries = DefaultMaxSeries
	}
	if o.MaxNames <= 0 {
		o.MaxNames = DefaultMaxNames
	}
	r := &Recorder{opts: o, reg: prometheus.NewRegistry(), names: map[string]struct{}{}}
	reqLabels := []string{LabelReporter, LabelSource, LabelDestination, LabelCode, LabelGRPCStatus}
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: RequestsTotal,
		Help: "Requests finished, by the sidecar that saw them (reporter=client: the caller's, server: the callee's)."}, reqLabels)
	r.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: RequestDuration,
		Help:    "Time from the request reaching the sidecar to the end of the response, as that sidecar saw it.",
		Buckets: DurationBuckets[:]}, reqLabels)
	ov := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: ProxyOverhead,
		Help:    "Time spent inside the sidecar on a request, excluding the wait for the upstream: the cost of the mesh itself.",
		Buckets: OverheadBuckets}, []string{LabelReporter})
	r.overhead[Client] = ov.WithLabelValues(Client.String())
	r.overhead[Server] = ov.WithLabelValues(Server.String())
	tcpLabels := []string{LabelReporter, LabelSource, LabelDestination}
	r.tcpConns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: TCPConnections,
		Help: "Opaque TCP connections tunnelled through the mesh."}, tcpLabels)
	r.tcpBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: TCPBytes,
		Help: "Bytes carried by opaque TCP tunnels; direction=sent is from the caller to the callee."},
		append(tcpLabels, LabelDirection))
	r.overflow = prometheus.NewCounter(prometheus.CounterOpts{Name: SeriesOverflow,
		Help: "Requests recorded in an \"other\" series because a cap on names or series was reached."})
	r.reg.MustRegister(r.requests, r.duration, ov, r.tcpConns, r.tcpBytes, r.overflow,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.initResilience()
	empty := map[key]*series{}
	r.series.Store(&empty)
	return r
}

// Registry is where other sidecar parts register their collectors.
func (r *Recorder) Registry() *prometheus.Registry { return r.reg }

// Handler serves the registry in the Prometheus text format.
func (r *Recorder) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4})
}

// Request records one finished request. src and dst are service names
// (Unknown when not known); code is the HTTP status sent to the caller;
// grpcStatus is the grpc-status trailer ("" when not gRPC); d is the whole
// exchange; overhead is d minus the time spent waiting on the upstream.
func (r *Recorder) Request(rep Reporter, src, dst string, code int, grpcStatus string, d, overhead time.Duration) {
	k := key{rep: rep, src: src, dst: dst, grpc: grpcCode(grpcStatus), code: codeOther}
	if code >= 0 && code < len(codeLabels) && codeLabels[code] != "" {
		k.code = int16(code)
	}
	s := (*r.series.Load())[k]
	if s == nil {
		s = r.slowSeries(k)
	}
	s.requests.Inc()
	s.duration.Observe(d.Seconds())
	if overhead < 0 {
		overhead = 0
	}
	r.overhead[rep&1].Observe(overhead.Seconds())
}

// slowSeries makes (or finds) the series for k under the lock, bounding
// every label. A key that maps to an overflow series is not cached under
// its raw form, so random input never grows the map.
func (r *Recorder) slowSeries(k key) *series {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := *r.series.Load()
	if s := m[k]; s != nil {
		return s
	}
	src, srcOK := r.nameLocked(k.src)
	dst, dstOK := r.nameLocked(k.dst)
	norm := key{rep: k.rep, grpc: k.grpc, code: k.code, src: src, dst: dst}
	if srcOK && dstOK {
		if s := m[norm]; s != nil {
			return s // k differs from norm (a malformed name): not cached
		}
	}
	if !srcOK || !dstOK || r.count >= r.opts.MaxSeries {
		// One overflow series per reporter, status class and gRPC status.
		r.overflow.Inc()
		cls := classOf(int(k.code))
		ok := key{rep: k.rep, src: Other, dst: Other, grpc: k.grpc, code: int16(-10 - cls)}
		if s := m[ok]; s != nil {
			return s
		}
		s := r.makeLocked(k.rep, Other, Other, classLabels[cls], grpcLabel(k.grpc))
		r.storeLocked(m, ok, s)
		return s
	}
	s := r.makeLocked(k.rep, src, dst, codeLabel(int(k.code)), grpcLabel(k.grpc))
	r.count++
	r.storeLocked(m, norm, s)
	return s
}

func (r *Recorder) makeLocked(rep Reporter, src, dst, code, grpc string) *series {
	lv := []string{rep.String(), src, dst, code, grpc}
	return &series{requests: r.requests.WithLabelValues(lv...), duration: r.duration.WithLabelValues(lv...)}
}

func (r *Recorder) storeLocked(m map[key]*series, k key, s *series) {
	next := make(map[key]*series, len(m)+1)
	for kk, v := range m {
		next[kk] = v
	}
	next[k] = s
	r.series.Store(&next)
}

// nameLocked bounds a service-name label value: a malformed name is
// Unknown; a new name past MaxNames is refused (ok false).
func (r *Recorder) nameLocked(s string) (string, bool) {
	if s == Unknown || s == Other {
		return s, true
	}
	if !ValidName(s) {
		return Unknown, true
	}
	if _, ok := r.names[s]; ok {
		return s, true
	}
	if len(r.names) >= r.opts.MaxNames {
		return Other, false
	}
	r.names[s] = struct{}{}
	return s, true
}

// ValidName reports whether s looks like a service name (lowercase
// letters, digits, '-' and '.', at most 63 characters). It is cheap enough
// for the request path, unlike the registry's full validation.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// codeLabels holds the label value of every code 0..599 that is a known
// HTTP status (0 is "no response": the caller went away first).
var codeLabels = func() []string {
	out := make([]string, 600)
	for c := range out {
		if c == 0 || http.StatusText(c) != "" || c == 499 {
			out[c] = strconv.Itoa(c)
		}
	}
	return out
}()

func codeLabel(c int) string {
	if c >= 0 && c < len(codeLabels) && codeLabels[c] != "" {
		return codeLabels[c]
	}
	return Other
}

// classOf is 1..5 for 1xx..5xx, 6 for anything else.
func classOf(c int) int {
	if c < 100 || c > 599 {
		return 6
	}
	return c / 100
}

var classLabels = [...]string{"", "1xx", "2xx", "3xx", "4xx", "5xx", Other}

// gRPC status codes 0..16 are the defined ones.
const grpcOther = 17

var grpcLabels = func() []string {
	out := make([]string, grpcOther+1)
	for i := 0; i < grpcOther; i++ {
		out[i] = strconv.Itoa(i)
	}
	out[grpcOther] = Other
	return out
}()

func grpcCode(s string) int8 {
	switch len(s) {
	case 0:
		return -1
	case 1:
		if s[0] >= '0' && s[0] <= '9' {
			return int8(s[0] - '0')
		}
	case 2:
		if s[0] == '1' && s[1] >= '0' && s[1] <= '6' {
			return int8(10 + s[1] - '0')
		}
	}
	return grpcOther
}

func grpcLabel(g int8) string {
	if g < 0 {
		return ""
	}
	return grpcLabels[g]
}

// TCPConn counts one tunnelled connection and returns the counters its
// bytes go to, so a long-lived tunnel shows progress while it is open.
func (r *Recorder) TCPConn(rep Reporter, src, dst string) (sent, received prometheus.Counter) {
	r.mu.Lock()
	s, srcOK := r.nameLocked(src)
	d, dstOK := r.nameLocked(dst)
	r.mu.Unlock()
	if !srcOK || !dstOK {
		s, d = Other, Other
	}
	r.tcpConns.WithLabelValues(rep.String(), s, d).Inc()
	return r.tcpBytes.WithLabelValues(rep.String(), s, d, "sent"), r.tcpBytes.WithLabelValues(rep.String(), s, d, "received")
}
