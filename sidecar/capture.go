package sidecar

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/weftmesh/weft/bind"
	"github.com/weftmesh/weft/capture"
	"github.com/weftmesh/weft/proxy/h1"
	"github.com/weftmesh/weft/resource"
)

// Default capture settings.
const (
	DefaultCaptureAddr = "127.0.0.1:15002"
)

// CaptureConfig turns on transparent capture (--capture): the app's
// outbound TCP is redirected by nftables rules to a listener of this
// sidecar, which meshes HTTP to known services and passes the rest through
// (package capture).
type CaptureConfig struct {
	Enabled bool
	// Addr is the capture listener, on 127.0.0.1 (where a redirect in
	// the output hook sends connections); port 0: any free port.
	Addr string
	// ExcludeUID is the uid whose connections are not captured: the
	// sidecar's own (negative: this process's uid).
	ExcludeUID int
	// NoRules: the rules are installed by `weft capture` (an init step
	// with CAP_NET_ADMIN); the sidecar only listens, on a fixed port.
	NoRules bool
}

type sidecarCapture struct {
	srv       *capture.Server
	front     *front
	installed bool
}

// newCapture binds the capture listener and installs the rules; called
// last in New, so nothing else can fail after the rules are in.
func (s *Sidecar) newCapture() error {
	cc := s.cfg.Capture
	if !cc.Enabled {
		return nil
	}
	if cc.Addr == "" {
		cc.Addr = DefaultCaptureAddr
	}
	host, _, err := net.SplitHostPort(cc.Addr)
	if err != nil || host != "127.0.0.1" {
		return fmt.Errorf("--capture-addr %q: want 127.0.0.1:PORT (redirected connections arrive on 127.0.0.1)", cc.Addr)
	}
	ln, err := bind.TCP("--capture-addr", cc.Addr)
	if err != nil {
		return err
	}
	uid := cc.ExcludeUID
	if uid < 0 {
		uid = os.Getuid()
	}
	c := &sidecarCapture{srv: &capture.Server{Listener: ln, Log: s.log.With("component", "capture"),
		Known: func(ctx context.Context, host string) bool {
			if net.ParseIP(strings.Trim(host, "[]")) != nil || resource.ValidateName(host) != nil {
				return false // an address or no possible service name: no need to ask
			}
			d, err := s.disc.Lookup(ctx, host)
			return err == nil && d.Exists
		}}}
	if !cc.NoRules {
		port := ln.Addr().(*net.TCPAddr).Port
		if err := capture.Install(capture.Rules{Port: port, ExcludeUID: uint32(uid)}); err != nil {
			ln.Close()
			return fmt.Errorf("--capture: %w", err)
		}
		c.installed = true
		s.log.Info("transparent capture installed", "table", capture.Table, "redirect_to", ln.Addr().String(), "excluded_uid", uid)
	}
	s.metrics.Registry().MustRegister(c.srv.Collector())
	s.capture = c
	return nil
}

// CaptureAddr is the bound capture listener ("" without --capture).
func (s *Sidecar) CaptureAddr() string {
	if s.capture == nil {
		return ""
	}
	return s.capture.srv.Listener.Addr().String()
}

// runCapture serves captured connections: the ones to mesh through the
// outbound proxy, like its own listener's.
func (s *Sidecar) runCapture(ctx context.Context, goRun func(string, func() error)) {
	c := s.capture
	if c == nil {
		return
	}
	var router h1.Router
	if !s.cfg.NoFastPath {
		router = s.out.Fast()
	}
	c.front = newFront(c.srv.Mesh(), s.out, router, s.log.With("component", "capture"), s.cfg.Listen, s.listenMetrics(), "capture")
	if c.front.fast != nil {
		c.front.fast.DialWait = s.fastDial() // mTLS to other sidecars, as the outbound's
	}
	c.front.run(goRun, "capture (mesh)")
	goRun("capture", func() error { return c.srv.Run(ctx) })
}

// stopCapture stops serving captured connections and removes the rules it
// installed, so the app's connections go out unredirected rather than to a
// closed port.
func (s *Sidecar) stopCapture(ctx context.Context) {
	c := s.capture
	if c == nil {
		return
	}
	if c.front != nil {
		_ = c.front.shutdown(ctx)
		c.front.close()
	}
	if c.installed {
		if err := capture.Remove(); err != nil {
			s.log.Warn("removing the capture rules", "err", err)
		}
	}
}
