package mtls

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"runtime"
	"sync"
	"time"
)

// Dialer opens connections to other sidecars' inbound listeners.
type Dialer struct {
	Source  *Source
	Timeout time.Duration // TCP connect plus handshake (and the wait for a handshake slot); default 2s
	// Plaintext, when it returns true, lets Dial skip TLS while this
	// sidecar has no certificate yet (a permissive mesh keeps working while
	// it starts); otherwise Dial waits for the certificate, within Timeout.
	Plaintext func() bool
	// Disabled, when it returns true, makes Dial skip TLS altogether (the
	// mesh-wide --mtls off, for benchmarks and migrations).
	Disabled func() bool
	// PlainAddr, when it returns true for an address, lets Dial skip TLS
	// to it: an instance with no sidecar (an unmeshed Kubernetes endpoint)
	// cannot answer a handshake.
	PlainAddr func(addr string) bool
	// MaxHandshakes bounds the TLS handshakes in progress to one
	// destination; 0: the number of CPUs, at least 2. See gate.
	MaxHandshakes int

	gates sync.Map // addr → chan struct{}
}

// maxGates bounds the per-destination semaphores kept; past it (a mesh
// of that many instances, or churn) they are dropped and made afresh,
// which at worst lets one burst through unbounded.
const maxGates = 4096

// gate is the semaphore of handshakes to addr. Why: a handshake is CPU
// work on both ends; when a burst of requests finds no idle pooled
// connection, each would open its own, and on a loaded machine dozens of
// concurrent handshakes each take so long that they time out, are retried
// and pile up (a storm: p99 in seconds). A few at a time finish quickly,
// and the requests behind them reuse what they open.
func (d *Dialer) gate(addr string) chan struct{} {
	if g, ok := d.gates.Load(addr); ok {
		return g.(chan struct{})
	}
	n := d.MaxHandshakes
	if n <= 0 {
		n = max(2, runtime.NumCPU())
	}
	size := 0
	d.gates.Range(func(any, any) bool { size++; return size < maxGates })
	if size >= maxGates {
		d.gates.Clear()
	}
	g, _ := d.gates.LoadOrStore(addr, make(chan struct{}, n))
	return g.(chan struct{})
}

// Dial connects and completes a mutually authenticated TLS handshake
// offering alpn (ALPNHTTP1 or ALPNH2). Failures, TLS ones included, are
// *net.OpError with Op "dial": nothing was sent, so the caller may retry
// on another instance.
func (d *Dialer) Dial(ctx context.Context, network, addr, alpn string) (net.Conn, error) {
	return d.DialUnlessFreed(ctx, network, addr, alpn, nil)
}

// ErrFreed is what DialUnlessFreed returns when it gave up its wait for a
// handshake slot because the caller's pool got a connection back.
var ErrFreed = errors.New("mtls: a pooled connection came free before a handshake slot")

// DialUnlessFreed is Dial for a connection pool: while the dial still
// waits for a handshake slot (see gate), a close of freed (a connection to
// addr went back to the caller's pool) ends it with ErrFreed, nothing
// dialled, so the request takes that connection instead of a handshake of
// its own. Why: in a burst that finds the pool empty, the requests beyond
// the gate's few used to wait for a slot and then each handshake anyway,
// about 1 ms of CPU on the pair per resumed handshake (X25519MLKEM768,
// BenchmarkHandshake, GOMAXPROCS=1), while the connections of the requests
// in flight came back within a fraction of that; a burst now opens about
// as many connections as there are slots. A nil freed never fires.
func (d *Dialer) DialUnlessFreed(ctx context.Context, network, addr, alpn string, freed <-chan struct{}) (net.Conn, error) {
	return d.dial(ctx, network, addr, alpn, freed, false)
}

func (d *Dialer) dial(ctx context.Context, network, addr, alpn string, freed <-chan struct{}, await bool) (net.Conn, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var nd net.Dialer
	plain := (d.PlainAddr != nil && d.PlainAddr(addr)) || (d.Disabled != nil && d.Disabled())
	if plain {
		return nd.DialContext(ctx, network, addr)
	}
	g := d.gate(addr)
	select {
	case g <- struct{}{}:
		defer func() { <-g }()
	case <-freed:
		return nil, &net.OpError{Op: "dial", Net: network, Err: ErrFreed}
	case <-ctx.Done():
		return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
	}
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if !d.Source.HasIdentity() {
		if d.Plaintext != nil && d.Plaintext() {
			return c, nil
		}
		select {
		case <-d.Source.Ready():
		case <-ctx.Done():
			c.Close()
			d.Source.fail(ReasonNoIdentity)
			return nil, &net.OpError{Op: "dial", Net: network, Addr: c.RemoteAddr(), Err: ErrNoIdentity}
		}
	}
	var aw *awaitConn
	under := c
	if await {
		aw = newAwaitConn(c)
		under = aw
	}
	tc := tls.Client(under, d.Source.ClientConfig(alpn))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		d.Source.fail(reasonOf(err))
		return nil, &net.OpError{Op: "dial", Net: network, Addr: c.RemoteAddr(), Err: err}
	}
	d.Source.Handshakes.Add(1)
	st := tc.ConnectionState()
	if st.DidResume {
		d.Source.Resumed.Add(1)
	}
	if aw != nil && st.Version == tls.VersionTLS13 {
		return &ReplyConn{Conn: tc, aw: aw}, nil
	}
	return tc, nil
}

// DialFunc adapts Dial to net/http's DialContext for one ALPN protocol.
func (d *Dialer) DialFunc(alpn string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.Dial(ctx, network, addr, alpn)
	}
}
