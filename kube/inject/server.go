package inject

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/weftmesh/weft/kube/client"
)

// Server is the webhook's HTTPS server and the registration it keeps.
type Server struct {
	Listener     net.Listener
	Cert         tls.Certificate
	Config       Config
	Client       *client.Client
	Registration Registration
	Logger       *slog.Logger
}

// Run registers the webhook (retrying until the API server takes it) and
// serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	log := s.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, Handler(s.Config, log))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	hs := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{s.Cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(s.Listener, "", "") }()

	regDone := make(chan struct{})
	go func() {
		defer close(regDone)
		for {
			err := Register(ctx, s.Client, s.Registration)
			if err == nil {
				log.Info("sidecar injector registered", "webhook", s.Listener.Addr().String())
				return
			}
			log.Warn("registering the sidecar injector", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	<-regDone
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
