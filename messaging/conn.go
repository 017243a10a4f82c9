package messaging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoBroker is returned while no broker URL is known (a sidecar that has
// not yet heard from the control plane, or messaging turned off).
var ErrNoBroker = errors.New("no broker configured (the control plane has not handed one out yet)")

// ErrMessagingOff is returned when the control plane runs without messaging.
var ErrMessagingOff = errors.New("messaging is off: the control plane runs without a broker (weft control --broker off)")

// ErrDenied is wrapped by a TopicPolicy's refusal of a publish or a
// subscription.
var ErrDenied = errors.New("denied")

// ErrBrokerUnavailable is returned when the broker cannot be reached.
var ErrBrokerUnavailable = errors.New("broker unavailable")

// ConnConfig configures a Conn.
type ConnConfig struct {
	// Access returns the broker URL(s), TLS and credentials to use now,
	// with no URLs while unknown. It is read again every Poll, so the
	// access may arrive late or change.
	Access func() Access
	// Known reports whether Access's source has answered, so that no URLs
	// mean "messaging off" rather than "not yet" (nil: never known).
	Known func() bool
	// Name is the client name the broker shows.
	Name   string
	Logger *slog.Logger
	// Lazy defers connecting until the first Session or Wait call, so a
	// sidecar whose app never publishes or subscribes holds no connection.
	Lazy bool
	Poll time.Duration // default 500ms
}

// Session is one connection to one broker access. The NATS client
// reconnects by itself; a new Session replaces it only when the access
// (URLs, TLS or credentials) changes.
type Session struct {
	URL    string // Access.URLs
	Access Access
	NC     *nats.Conn
	JS     jetstream.JetStream
}

// Connected reports whether the connection is up right now.
func (s *Session) Connected() bool { return s.NC.Status() == nats.CONNECTED }

// Conn keeps a broker Session that follows a URL which may arrive late or
// change. Safe for concurrent use.
type Conn struct {
	cfg    ConnConfig
	log    *slog.Logger
	wanted atomic.Bool
	kick   chan struct{}

	mu      sync.Mutex
	cur     *Session
	changed chan struct{} // closed when cur is replaced
	lastErr string
}

// NewConn returns a Conn; Run maintains it.
func NewConn(cfg ConnConfig) *Conn {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	c := &Conn{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), changed: make(chan struct{})}
	c.wanted.Store(!cfg.Lazy)
	return c
}

// Session returns the current session (nil if none yet) and asks for one.
func (c *Conn) Session() *Session {
	c.want()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *Conn) want() {
	if !c.wanted.Swap(true) {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// Changed returns a channel closed when the session is next replaced.
func (c *Conn) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

// Off reports that messaging is known to be off: no broker URL, from a
// source that has answered.
func (c *Conn) Off() bool {
	return c.cfg.Known != nil && c.cfg.Known() && c.cfg.Access().URLs == ""
}

// Wait returns a session whose connection is up, waiting for one until ctx
// ends; the error then says why there is none.
func (c *Conn) Wait(ctx context.Context) (*Session, error) {
	for {
		if c.Off() {
			return nil, ErrMessagingOff
		}
		s := c.Session()
		if s != nil && s.Connected() {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, c.why(s)
		case <-c.Changed():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Conn) why(s *Session) error {
	if s == nil {
		u := c.cfg.Access().URLs
		if u == "" {
			return ErrNoBroker
		}
		return fmt.Errorf("%w: connecting to %s", ErrBrokerUnavailable, Redact(u))
	}
	c.mu.Lock()
	last := c.lastErr
	c.mu.Unlock()
	if last != "" {
		return fmt.Errorf("%w: cannot reach %s (%s)", ErrBrokerUnavailable, Redact(s.URL), last)
	}
	return fmt.Errorf("%w: cannot reach %s (connection %s)", ErrBrokerUnavailable, Redact(s.URL), strings.ToLower(s.NC.Status().String()))
}

// Run connects, follows URL changes, and closes the connection when ctx
// ends.
func (c *Conn) Run(ctx context.Context) error {
	t := time.NewTicker(c.cfg.Poll)
	defer t.Stop()
	defer func() {
		c.mu.Lock()
		cur := c.cur
		c.cur = nil
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if cur != nil {
			cur.NC.Close()
		}
	}()
	for {
		if c.wanted.Load() {
			c.follow()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.kick:
		}
	}
}

func (c *Conn) follow() {
	a := c.cfg.Access()
	c.mu.Lock()
	cur := c.cur
	c.mu.Unlock()
	// No URL keeps the last session: settings are empty only between a
	// restart of the sidecar and its first Hello.
	if a.URLs == "" || (cur != nil && cur.Access == a) {
		return
	}
	s, err := c.connect(a)
	if err != nil {
		c.log.Error("broker URL unusable", "broker", Redact(a.URLs), "err", err)
		return
	}
	c.mu.Lock()
	c.cur = s
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	if cur != nil {
		c.log.Info("broker access changed", "from", Redact(cur.URL), "to", Redact(a.URLs))
		_ = cur.NC.Drain()
	}
}

// connect opens a's session.
func (c *Conn) connect(a Access) (*Session, error) {
	log := c.log.With("broker", Redact(a.URLs))
	// Errors are kept and logged with what to check (a.Explain): a sidecar
	// refused by the broker says which control plane flag is wrong.
	setErr := func(err error) {
		c.mu.Lock()
		if err == nil {
			c.lastErr = ""
		} else {
			c.lastErr = a.Explain(err).Error()
		}
		c.mu.Unlock()
	}
	extra, err := a.Options()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(a.URLs, append(extra,
		nats.Name(c.cfg.Name),
		// Keep trying for ever: the broker may start after the sidecar, or
		// restart with the control plane.
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, 100*time.Millisecond),
		nats.PingInterval(10*time.Second),
		nats.ConnectHandler(func(*nats.Conn) { setErr(nil); log.Info("connected to broker") }),
		nats.ReconnectHandler(func(*nats.Conn) { setErr(nil); log.Info("reconnected to broker") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return // closed by us
			}
			setErr(err)
			log.Warn("disconnected from broker; reconnecting", "err", a.Explain(err))
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			setErr(err)
			if a.Refused(err) {
				log.Error("broker refused the connection; retrying", "err", a.Explain(err))
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			setErr(err)
			log.Warn("broker error", "err", a.Explain(err))
		}),
	)...)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Session{URL: a.URLs, Access: a, NC: nc, JS: js}, nil
}

// ValidateURLs checks a comma-separated list of broker URLs
// (nats://host:port, tls://host:port).
func ValidateURLs(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("empty broker URL")
	}
	for _, one := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" || u.Port() == "" {
			return fmt.Errorf("%q is not a broker URL such as nats://127.0.0.1:4222", Redact(one))
		}
	}
	return nil
}

// Probe dials the broker once, without retrying, and closes the
// connection: the control plane's check at start that the broker accepts
// its TLS and credentials. The error says which flag to check.
func Probe(a Access, timeout time.Duration) error {
	extra, err := a.Options()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(a.URLs, append(extra, nats.Name("weft-control-probe"), nats.Timeout(timeout), nats.NoReconnect())...)
	if err != nil {
		return a.Explain(err)
	}
	nc.Close()
	return nil
}

// Redact hides credentials in broker URLs for logs and errors.
func Redact(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
