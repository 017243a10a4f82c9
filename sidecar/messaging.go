package sidecar

import (
	"context"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/deliver"
	"github.com/weftmesh/weft/messaging/publish"
	"github.com/weftmesh/weft/messaging/topicpolicy"
)

// sidecarMessaging is the sidecar's part in messaging: the broker
// connection (opened on first use, following the URL the control plane
// hands out), the publish endpoint on the outbound listener, and the
// subscriber that delivers to the app.
type sidecarMessaging struct {
	conn    *messaging.Conn
	topics  *topicpolicy.Policies
	pub     *publish.Publisher
	deliver *deliver.Manager // nil for a pure client
	stop    context.CancelFunc
	done    chan struct{}
}

func (s *Sidecar) checkMessaging() error {
	if len(s.cfg.Subscribe) > 0 && s.cfg.AppPort == 0 {
		return errors.New("--subscribe needs --app-port: messages are delivered to the app")
	}
	return nil
}

// newMessaging is called after newTelemetry: it registers its metrics on
// the sidecar's registry and uses its tracer.
func (s *Sidecar) newMessaging() error {
	cfg := s.cfg
	metrics, err := messaging.NewMetrics(s.metrics.Registry())
	if err != nil {
		return err
	}
	log := s.log.With("component", "messaging")
	maxBytes := func() int {
		n, _ := strconv.Atoi(s.disc.Setting(messaging.SettingMaxMessageBytes))
		return n
	}
	spans := messaging.MeshSpans(s.tracer)
	m := &sidecarMessaging{done: make(chan struct{})}
	m.conn = messaging.NewConn(messaging.ConnConfig{Access: s.brokerAccess,
		Known: s.brokerKnown, Name: cfg.ID, Logger: log, Lazy: true})
	m.topics = topicpolicy.New(cfg.Service, log)
	m.pub = publish.New(publish.Config{Conn: m.conn, Source: cfg.Service, MaxMessageBytes: maxBytes, Metrics: metrics, Spans: spans, Logger: log,
		Authorize: m.topics.Publish})
	if cfg.AppPort > 0 {
		m.deliver, err = deliver.New(deliver.Config{Service: cfg.Service, Instance: cfg.ID, AppAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.AppPort)),
			Local: cfg.Subscribe, Conn: m.conn, Discovery: s.disc, AppReady: s.appReady, MaxMessageBytes: maxBytes,
			Grace: min(cfg.Drain, 5*time.Second), Metrics: metrics, Spans: spans, Logger: log, Policies: m.topics})
		if err != nil {
			return err
		}
	}
	s.msg = m
	return nil
}

// brokerKnown: the control plane has answered and the certificate (with
// the broker's credentials) is in, so an empty broker URL means messaging
// is off rather than not yet.
func (s *Sidecar) brokerKnown() bool { return s.disc.Connected() && s.id.src.HasIdentity() }

// runMessaging starts the broker connection (until bg ends) and the
// deliveries (until stopDeliveries).
func (s *Sidecar) runMessaging(bg context.Context, goRun func(string, func() error)) {
	goRun("broker connection", func() error { return s.msg.conn.Run(bg) })
	goRun("topic policies", func() error { return s.msg.topics.Run(bg, s.disc) })
	if s.msg.deliver == nil {
		close(s.msg.done)
		return
	}
	ctx, cancel := context.WithCancel(bg)
	s.msg.stop = cancel
	goRun("deliveries", func() error {
		defer close(s.msg.done)
		return s.msg.deliver.Run(ctx)
	})
}

// stopDeliveries stops pulling messages and waits for the deliveries in
// flight (bounded by the subscriber's grace); undelivered messages go back
// to the broker for other instances. Called by Drain, before the app stops.
func (s *Sidecar) stopDeliveries() {
	if s.msg == nil || s.msg.stop == nil {
		return
	}
	s.msg.stop()
	<-s.msg.done
}

// Subscriptions lists the subscriptions this sidecar delivers (for views).
func (s *Sidecar) Subscriptions() []deliver.Status {
	if s.msg == nil || s.msg.deliver == nil {
		return nil
	}
	return s.msg.deliver.Subscriptions()
}
