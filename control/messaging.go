package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	neturl "net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/admin"
	"github.com/weftmesh/weft/messaging/broker"
	"github.com/weftmesh/weft/resource"
)

// BrokerOff is the --broker value that turns messaging off.
const BrokerOff = "off"

// newMessaging starts the embedded broker (unless an external one is
// configured), hands the broker URL and message size limit to sidecars in
// the Hello, and prepares the messaging API. Called from New, after the
// settings map exists.
func (s *Server) newMessaging(objs []resource.Object) error {
	cfg := s.cfg
	if cfg.Broker == BrokerOff {
		return nil
	}
	max := cfg.MaxMessageBytes
	if max == 0 {
		max = messaging.DefaultMaxMessageBytes
	}
	if max < 0 || max > messaging.MaxMaxMessageBytes {
		return fmt.Errorf("--max-message-bytes %d: want 1..%d", max, messaging.MaxMaxMessageBytes)
	}
	url := cfg.Broker
	var access messaging.Access // what the control plane and certified sidecars dial
	if url == "" {
		if !cfg.NATS.Empty() {
			return errors.New("--nats-tls-*, --nats-creds, --nats-nkey, --nats-user and --nats-password are for an external NATS (--broker nats://…); the embedded broker's credentials are made by the control plane (--broker-auth)")
		}
		var err error
		if url, err = s.startBroker(max); err != nil {
			return err
		}
		access.URLs = url
		if cfg.Security.BrokerAuth {
			// Everyone sees the URL; only sidecars with a certificate get the
			// credentials (with it, in the Certificate message).
			access.User, access.Password = brokerUser, s.brokerPass
		}
	} else {
		if err := messaging.ValidateURLs(url); err != nil {
			return fmt.Errorf("--broker: %w", err)
		}
		var err error
		if access, err = cfg.NATS.Load(url); err != nil {
			return err
		}
		// A user and password in the URL are handed out like the other
		// credentials (Load moved them out of it): to sidecars with a
		// certificate, not in the Hello.
		url = access.URLs
		if err := messaging.Probe(access, 5*time.Second); err != nil {
			if access.Refused(err) {
				return fmt.Errorf("--broker %s: %w", messaging.Redact(url), err)
			}
			s.log.Warn("external broker not reachable now; the control plane and sidecars keep trying", "broker", messaging.Redact(url), "err", err)
		}
	}
	s.cfg.Settings[messaging.SettingBroker] = url
	s.cfg.Settings[messaging.SettingMaxMessageBytes] = strconv.Itoa(max)
	if access != (messaging.Access{URLs: url}) {
		s.sec.broker = access
	}
	conn := messaging.NewConn(messaging.ConnConfig{Access: func() messaging.Access { return access }, Name: "weft-control",
		Logger: s.log.With("component", "messaging")})
	// The API shows the URLs redacted: nats://redacted@… for the embedded
	// broker's password and a --broker URL's userinfo (--nats-user's are
	// not in the URL an operator gave, and not shown in it).
	shown := access.URLs
	if cfg.Broker == "" || strings.Contains(cfg.Broker, "@") {
		shown = access.Redacted()
	}
	s.msg = admin.New(admin.Config{Conn: conn, BrokerURL: shown, MaxMessageBytes: max, Logger: s.log.With("component", "messaging")})
	s.msg.SetSubscriptions(objs)
	return nil
}

// startBroker starts the embedded broker and returns the URL sidecars dial.
func (s *Server) startBroker(max int) (string, error) {
	cfg := s.cfg
	addr := cfg.BrokerAddr
	bcfg := broker.Config{Addr: addr, StoreDir: filepath.Join(cfg.DataDir, "broker"),
		MaxPayload: max + messaging.HeaderRoom, Logger: s.log.With("component", "broker")}
	if cfg.Security.BrokerAuth {
		pw, err := s.brokerPassword()
		if err != nil {
			return "", err
		}
		bcfg.Username, bcfg.Password = brokerUser, pw
	}
	if addr == "" {
		// Not chosen: the usual port, or any free one if it is taken
		// (another control plane on this host). Sidecars learn the
		// URL from the Hello, and follow it if it changes on restart.
		bcfg.Addr = broker.DefaultAddr
	}
	b, err := broker.New(bcfg)
	if err != nil && addr == "" && errors.Is(err, broker.ErrAddrInUse) {
		s.log.Info("broker port in use; the embedded broker takes any free port", "port", broker.DefaultAddr)
		addr = "127.0.0.1:0"
		bcfg.Addr = addr
		b, err = broker.New(bcfg)
	}
	if err != nil {
		return "", err
	}
	if addr == "" {
		addr = broker.DefaultAddr
	}
	s.broker = b
	_, port, _ := net.SplitHostPort(b.URL()[len("nats://"):])
	host, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsUnspecified() {
		return b.URL(), nil
	}
	return "nats://" + advertisedAddr(&net.TCPAddr{IP: ip, Port: atoi(port)}), nil
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// runMessaging starts the messaging parts; stop stops them, the broker last.
func (s *Server) runMessaging() (stop func()) {
	if s.msg == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	msgDone := make(chan struct{})
	go func() { defer close(msgDone); _ = s.msg.Run(ctx) }()
	brokerCtx, stopBroker := context.WithCancel(context.Background())
	brokerDone := make(chan struct{})
	go func() {
		defer close(brokerDone)
		if s.broker == nil {
			return
		}
		if err := s.broker.Run(brokerCtx); err != nil {
			s.log.Error("embedded broker", "err", err)
		}
	}()
	return func() {
		cancel()
		<-msgDone
		stopBroker()
		<-brokerDone
	}
}

// messagingConfig hands every stored object to messaging, which keeps the
// consumers of Subscriptions in step.
func (s *Server) messagingConfig(objs []resource.Object) {
	if s.msg != nil {
		s.msg.SetSubscriptions(objs)
	}
}

// messagingRoutes mounts /api/v1/topics….
func (s *Server) messagingRoutes(mux *http.ServeMux) {
	if s.msg != nil {
		s.msg.Register(mux)
		return
	}
	off := func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("messaging is off (weft control --broker %s)", BrokerOff))
	}
	mux.HandleFunc("/api/v1/topics", off)
	mux.HandleFunc("/api/v1/topics/", off)
}

// The embedded broker's one user, when --broker-auth is on.
const (
	brokerUser           = "weft"
	brokerPasswordSecret = "broker-password"
)

// brokerPassword is made on first start and kept in the store, so
// sidecars' connections survive a control plane restart.
func (s *Server) brokerPassword() (string, error) {
	pw, err := s.storedSecret(brokerPasswordSecret)
	if err != nil {
		return "", fmt.Errorf("broker password: %w", err)
	}
	s.brokerPass = pw
	return pw, nil
}

// legacyBrokerURL is broker_url for a sidecar that does not read
// broker_access's credential fields (an older version): the URLs with the
// user and password, or the token, as userinfo.
func legacyBrokerURL(a messaging.Access) string {
	var ui *neturl.Userinfo
	switch {
	case a.User != "":
		ui = neturl.UserPassword(a.User, a.Password)
	case a.Token != "":
		ui = neturl.User(a.Token)
	default:
		return a.URLs
	}
	parts := strings.Split(a.URLs, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil {
			u.User = ui
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
