package mtls

import (
	"context"
	"crypto/tls"
	"net"
	"time"
)

// Dialer opens connections to other sidecars' inbound listeners.
type Dialer struct {
	Source  *Source
	Timeout time.Duration // TCP connect plus handshake; default 2s
	// Plaintext, when it returns true, lets Dial skip TLS while this
	// sidecar has no certificate yet (a permissive mesh keeps working while
	// it starts); otherwise Dial waits for the certificate, within Timeout.
	Plaintext func() bool
	// PlainAddr, when it returns true for an address, lets Dial skip TLS
	// to it: an instance with no sidecar (an unmeshed Kubernetes endpoint)
	// cannot answer a handshake.
	PlainAddr func(addr string) bool
}

// Dial connects and completes a mutually authenticated TLS handshake
// offering alpn (ALPNHTTP1 or ALPNH2). Failures, TLS ones included, are
// *net.OpError with Op "dial": nothing was sent, so the caller may retry
// on another instance.
func (d *Dialer) Dial(ctx context.Context, network, addr, alpn string) (net.Conn, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if d.PlainAddr != nil && d.PlainAddr(addr) {
		return c, nil
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
	tc := tls.Client(c, d.Source.ClientConfig(alpn))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		d.Source.fail(reasonOf(err))
		return nil, &net.OpError{Op: "dial", Net: network, Addr: c.RemoteAddr(), Err: err}
	}
	d.Source.Handshakes.Add(1)
	if tc.ConnectionState().DidResume {
		d.Source.Resumed.Add(1)
	}
	return tc, nil
}

// DialFunc adapts Dial to net/http's DialContext for one ALPN protocol.
func (d *Dialer) DialFunc(alpn string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.Dial(ctx, network, addr, alpn)
	}
}
