package harness

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// BodySize is the backend's response body length.
const BodySize = 1024

// Environment variables that turn a harness binary (meshbench or the test
// binary) into the backend process.
const (
	envRole        = "MESHBENCH_ROLE"
	envBackendAddr = "MESHBENCH_BACKEND_ADDR"
	roleBackend    = "backend"
)

// BackendHandler answers any request with 1 KiB of text.
func BackendHandler() http.Handler {
	body := bytes.Repeat([]byte("weft-bench-0123456789abcdefghijklmnopqrstuvwxyz\n"), BodySize/48+1)[:BodySize]
	clen := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{clen}
		_, _ = w.Write(body)
	})
}

// ServeBackend serves BackendHandler on addr until SIGTERM or SIGINT.
func ServeBackend(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           BackendHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          nil,
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "backend listening on %s\n", l.Addr())
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// RunRoleIfRequested runs the backend and exits when this process was
// started as one (see BackendArgv); otherwise it returns. Call it first in
// main and in TestMain.
func RunRoleIfRequested() {
	serve := ServeBackend
	switch os.Getenv(envRole) {
	case roleBackend:
	case roleGRPCServer:
		serve = ServeGRPCBackend
	default:
		return
	}
	if err := serve(os.Getenv(envBackendAddr)); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// backendEnv is the environment that makes exe a backend on addr.
// GOGC is raised (unless set) so that the backend, which shares its core
// with the load generator, collects garbage less often: the harness's own
// pauses are noise in every path's tail.
func backendEnv(addr string) []string {
	env := []string{envRole + "=" + roleBackend, envBackendAddr + "=" + addr, "GOMAXPROCS=1"}
	if os.Getenv("GOGC") == "" {
		env = append(env, "GOGC="+strconv.Itoa(HarnessGOGC))
	}
	return env
}

// HarnessGOGC is the GOGC of the backend and of meshbench's load generator.
const HarnessGOGC = 400
