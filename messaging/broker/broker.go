// Package broker runs the embedded message broker: a NATS server with
// JetStream inside the control plane process, its store under the control
// plane's data directory, listening on loopback. Sidecars reach it with the
// URL the control plane hands them; nothing else needs installing for
// `weft demo`. With `weft control --broker nats://…` an external NATS
// cluster is used instead and this package is not started.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/weftmesh/weft/bind"
)

// DefaultAddr is the embedded broker's listen address: loopback, and not
// NATS's usual 4222, so it never collides with a NATS server already there.
const DefaultAddr = "127.0.0.1:15222"

// ErrAddrInUse is wrapped by New when the address is taken.
var ErrAddrInUse = errors.New("address in use")

// Config configures the embedded broker.
type Config struct {
	// Addr is host:port; port 0 picks a free one.
	Addr string
	// StoreDir holds JetStream's files (streams, consumers).
	StoreDir string
	// MaxPayload is the largest message (payload and headers) accepted.
	MaxPayload int
	Logger     *slog.Logger
	// Flag names Addr in errors (default --broker-addr).
	Flag string
	// Username and Password, when set, are required of every client
	// (weft control --broker-auth).
	Username, Password string
}

// Broker is a running embedded NATS server.
type Broker struct {
	srv *server.Server
	url string
	log *slog.Logger
}

// New starts the server and waits until it accepts connections, so a port
// in use or an unusable store is reported before anything else starts.
// Call Run to own its lifetime, or Close.
func New(cfg Config) (*Broker, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Flag == "" {
		cfg.Flag = "--broker-addr"
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("broker: no store directory")
	}
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%s %q: not a host:port address", cfg.Flag, cfg.Addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("%s %q: not a port number", cfg.Flag, cfg.Addr)
	}
	// The NATS server reports a port in use only in its log; binding first
	// turns it into the same one-line error as every other Weft listener.
	ln, err := bind.TCP(cfg.Flag, cfg.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "already in use") {
			return nil, fmt.Errorf("%w (%w)", err, ErrAddrInUse)
		}
		return nil, err
	}
	ln.Close()
	if port == 0 {
		port = server.RANDOM_PORT
	}
	pw := cfg.Password
	if pw != "" {
		// The server keeps a bcrypt hash, not the password (and says
		// nothing about plaintext passwords). The password is random and
		// long, so the lowest cost is enough; it is paid once per
		// connection, never per message.
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			return nil, fmt.Errorf("embedded broker: hashing the password: %w", err)
		}
		pw = string(h)
	}
	opts := &server.Options{
		ServerName:         "weft-broker",
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		JetStreamMaxMemory: 64 << 20, // streams are on disk; memory only for ephemeral scans
		NoSigs:             true,
		MaxPayload:         int32(cfg.MaxPayload),
		Username:           cfg.Username,
		Password:           pw,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	log := cfg.Logger
	srv.SetLoggerV2(logAdapter{log}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("embedded broker on %s did not start (see the log); store %s", cfg.Addr, cfg.StoreDir)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("embedded broker: JetStream did not start with store %s (see the log)", cfg.StoreDir)
	}
	b := &Broker{srv: srv, url: "nats://" + srv.Addr().String(), log: log}
	log.Info("embedded broker serving", "url", b.url, "store", cfg.StoreDir)
	return b, nil
}

// URL is where clients connect (nats://127.0.0.1:PORT).
func (b *Broker) URL() string { return b.url }

// Run serves until ctx ends, then shuts the server down. It returns an
// error if the server stops on its own.
func (b *Broker) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		b.srv.WaitForShutdown()
		close(done)
	}()
	select {
	case <-ctx.Done():
		b.Close()
		<-done
		return nil
	case <-done:
		return errors.New("embedded broker stopped unexpectedly")
	}
}

// Close shuts the server down and waits for it.
func (b *Broker) Close() {
	b.srv.Shutdown()
	b.srv.WaitForShutdown()
	b.log.Info("embedded broker stopped")
}

// logAdapter sends the NATS server's log to slog.
type logAdapter struct{ log *slog.Logger }

func (l logAdapter) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) } // the startup banner
func (l logAdapter) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l logAdapter) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l logAdapter) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l logAdapter) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l logAdapter) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
