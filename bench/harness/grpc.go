package harness

// gRPC rows of the mesh benchmark: the same two-hop shape as the HTTP/1.1
// paths, carrying gRPC over h2c. A unary call and one message round trip on
// a long-lived bidirectional stream are each one "request"; the backend
// answers each with BodySize bytes. The messages are raw bytes (a codec
// that copies them through), so no generated code and no protobuf cost sits
// in the load generator or the backend: what differs between the paths is
// the proxies alone.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// gRPC path names: a family prefix and the shape of the HTTP/1.1 path.
const (
	PathGRPCDirect        = "grpc-direct"
	PathGRPCWeft          = "grpc-weft"
	PathGRPCHAProxy       = "grpc-haproxy"
	PathGRPCStreamDirect  = "grpcstream-direct"
	PathGRPCStreamWeft    = "grpcstream-weft"
	PathGRPCStreamHAProxy = "grpcstream-haproxy"
)

// GRPCPaths are the gRPC paths, in the order rounds interleave them.
var GRPCPaths = []string{PathGRPCDirect, PathGRPCWeft, PathGRPCHAProxy, PathGRPCStreamDirect, PathGRPCStreamWeft, PathGRPCStreamHAProxy}

// Protocols of a Target.
const (
	ProtoHTTP1      = ""
	ProtoGRPCUnary  = "grpc-unary"
	ProtoGRPCStream = "grpc-stream"
)

// Family is the name of a path's protocol family ("http/1.1", "grpc unary",
// "grpc stream") and its shape ("direct", "weft", "haproxy", ...).
func Family(path string) (family, shape string) {
	switch {
	case strings.HasPrefix(path, "grpcstream-"):
		return "grpc stream", strings.TrimPrefix(path, "grpcstream-")
	case strings.HasPrefix(path, "grpc-"):
		return "grpc unary", strings.TrimPrefix(path, "grpc-")
	}
	return "http/1.1", path
}

// pathIn is the path of the given shape in path's family.
func pathIn(path, shape string) string {
	switch f, _ := Family(path); f {
	case "grpc stream":
		return "grpcstream-" + shape
	case "grpc unary":
		return "grpc-" + shape
	}
	return shape
}

func protoOf(path string) string {
	switch f, _ := Family(path); f {
	case "grpc stream":
		return ProtoGRPCStream
	case "grpc unary":
		return ProtoGRPCUnary
	}
	return ProtoHTTP1
}

// isGRPC reports whether any of paths is a gRPC path.
func isGRPC(paths []string) bool {
	for _, p := range paths {
		if protoOf(p) != ProtoHTTP1 {
			return true
		}
	}
	return false
}

const (
	grpcService      = "weft.bench.Bench"
	grpcUnary        = "/" + grpcService + "/Unary"
	grpcStreamMethod = "/" + grpcService + "/Stream"
	roleGRPCServer   = "grpc-backend"
)

// rawCodec passes []byte messages through unchanged. Its name is "proto"
// so the content-type stays application/grpc, as every real client sends.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*[]byte); ok {
		return *b, nil
	}
	return nil, fmt.Errorf("rawCodec: %T is not *[]byte", v)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: %T is not *[]byte", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

var grpcBody = bytes.Repeat([]byte("weft-bench-0123456789abcdefghijklmnopqrstuvwxyz\n"), BodySize/48+1)[:BodySize]

// grpcDesc is the backend's service: Unary answers BodySize bytes; Stream
// answers every message it receives with BodySize bytes.
var grpcDesc = grpc.ServiceDesc{
	ServiceName: grpcService,
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			out := grpcBody
			return &out, nil
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(_ any, s grpc.ServerStream) error {
			var in []byte
			out := grpcBody
			for {
				if err := s.RecvMsg(&in); err != nil {
					return nil // the client ended the stream
				}
				if err := s.SendMsg(&out); err != nil {
					return err
				}
			}
		},
	}},
}

// ServeGRPCBackend serves the bench's gRPC service over h2c on addr until
// SIGTERM or SIGINT.
func ServeGRPCBackend(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	s.RegisterService(&grpcDesc, struct{}{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		s.Stop()
	}()
	fmt.Fprintf(os.Stderr, "grpc backend listening on %s\n", l.Addr())
	return s.Serve(l)
}

// grpcBackendEnv makes the harness binary the gRPC backend on addr.
func grpcBackendEnv(addr string) []string {
	env := backendEnv(addr)
	for i, e := range env {
		if strings.HasPrefix(e, envRole+"=") {
			env[i] = envRole + "=" + roleGRPCServer
		}
	}
	return env
}

// GRPCClient sends gRPC unary calls, or message round trips on pooled
// bidirectional streams, to one path over one h2c connection (what a gRPC
// client does: one connection, many streams).
type GRPCClient struct {
	cc      *grpc.ClientConn
	stream  bool
	timeout time.Duration
	// slots bounds the streams open at once: pooled streams stay open for
	// the run, and past the proxies' concurrent-stream limit (HAProxy's
	// default is 100) opening one more would wait for ever.
	slots chan struct{}
	free  chan *pooledStream
}

// maxStreams is how many bidirectional streams a GRPCClient keeps open.
const maxStreams = 64

type pooledStream struct {
	s      grpc.ClientStream
	cancel context.CancelFunc
}

// NewGRPCClient dials t (lazily, as grpc-go does) for the given protocol.
func NewGRPCClient(t Target, timeout time.Duration) (*GRPCClient, error) {
	authority := t.Host
	if authority == "" {
		authority = t.Addr
	}
	cc, err := grpc.NewClient("passthrough:///"+t.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(authority),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})),
		// 1 KiB answers: the default 64 KiB windows never limit, and BDP
		// probing would only add PINGs to one path and not another.
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<22))
	if err != nil {
		return nil, err
	}
	return &GRPCClient{cc: cc, stream: t.Proto == ProtoGRPCStream, timeout: timeout, slots: make(chan struct{}, maxStreams), free: make(chan *pooledStream, maxStreams)}, nil
}

// Close ends the pooled streams and the connection.
func (c *GRPCClient) Close() {
	for {
		select {
		case s := <-c.free:
			_ = s.s.CloseSend()
			s.cancel()
			continue
		default:
		}
		break
	}
	c.cc.Close()
}

var errGRPCBody = errors.New("unexpected message length")

// Do makes one call (unary) or one round trip on a stream.
func (c *GRPCClient) Do(ctx context.Context) error {
	in := []byte("ping")
	var out []byte
	if !c.stream {
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		if err := c.cc.Invoke(cctx, grpcUnary, &in, &out); err != nil {
			return grpcErr(err)
		}
		if len(out) != BodySize {
			return fmt.Errorf("%w: %d", errGRPCBody, len(out))
		}
		return nil
	}
	s, err := c.take(ctx)
	if err != nil {
		return grpcErr(err)
	}
	// A round trip that outlives the timeout ends its stream (and frees
	// its slot) rather than holding the loop.
	stop := time.AfterFunc(c.timeout, s.cancel)
	err = s.s.SendMsg(&in)
	if err == nil {
		err = s.s.RecvMsg(&out)
	}
	if !stop.Stop() || err != nil {
		s.cancel()
		<-c.slots
		if err == nil {
			err = errors.New("timeout")
		}
		return grpcErr(err)
	}
	c.put(s)
	if len(out) != BodySize {
		return fmt.Errorf("%w: %d", errGRPCBody, len(out))
	}
	return nil
}

// take returns an idle stream, or opens one while fewer than maxStreams
// are open, or waits for one to come back. Streams live as long as the
// client (a run).
func (c *GRPCClient) take(ctx context.Context) (*pooledStream, error) {
	select {
	case s := <-c.free:
		return s, nil
	default:
	}
	select {
	case s := <-c.free:
		return s, nil
	case c.slots <- struct{}{}:
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		s, err := c.cc.NewStream(sctx, &grpc.StreamDesc{StreamName: "Stream", ServerStreams: true, ClientStreams: true}, grpcStreamMethod)
		if err != nil {
			cancel()
			<-c.slots
			return nil, err
		}
		return &pooledStream{s: s, cancel: cancel}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *GRPCClient) put(s *pooledStream) { c.free <- s }

// grpcErr names a failure by its code, so that error kinds aggregate.
func grpcErr(err error) error {
	if st, ok := status.FromError(err); ok {
		if st.Code() == codes.DeadlineExceeded {
			return errors.New("timeout")
		}
		return fmt.Errorf("grpc %s: %s", st.Code(), firstLine(st.Message()))
	}
	return simplifyErr(err)
}

// waitGRPC waits until one call through t succeeds.
func waitGRPC(ctx context.Context, t Target, wait time.Duration, procs ...*Proc) error {
	c, err := NewGRPCClient(Target{Addr: t.Addr, Host: t.Host, Proto: ProtoGRPCUnary}, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(wait)
	for {
		err := c.Do(ctx)
		if err == nil {
			return nil
		}
		for _, p := range procs {
			if done, perr := p.Exited(); done {
				return fmt.Errorf("%s exited (%v): %s", p.Name, perr, p.LogTail(6))
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("no gRPC answer through %s within %v: %v", t.Addr, wait, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// HAProxy in h2c on both sides of each hop: what "an HAProxy pair in h2c
// mode" means (issue #13), the same shape as the HTTP/1.1 pair.
func startHAProxyGRPC(ctx context.Context, env *Env, dir, name string) (*Topology, error) {
	return startHAProxyWith(ctx, env, dir, name, env.GRPCBackendAddr, " proto h2")
}

// startPathGRPC starts a gRPC path.
func startPathGRPC(ctx context.Context, name string, env *Env, dir string) (*Topology, error) {
	if env.GRPCBackendAddr == "" {
		return nil, fmt.Errorf("%s: no gRPC backend was started", name)
	}
	var t *Topology
	var err error
	switch _, shape := Family(name); shape {
	case PathDirect:
		t = &Topology{Target: Target{Addr: env.GRPCBackendAddr, Host: "backend", Proto: protoOf(name)}}
	case PathHAProxy:
		t, err = startHAProxyGRPC(ctx, env, dir, name)
	case PathWeft:
		t, err = startWeftWith(ctx, env, dir, name, env.GRPCBackendAddr)
	default:
		return nil, fmt.Errorf("unknown path %q", name)
	}
	return t, err
}

// startGRPCBackend starts the gRPC backend (its log beside the HTTP
// backend's), retrying on a fresh port as the HTTP backend's start does.
func startGRPCBackend(ctx context.Context, st *Starter, self, logs, cpu string) (*Proc, string, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, "", err
		}
		a := addr(port)
		p, err := st.Start(ProcSpec{Name: "grpc-backend", Argv: []string{self}, Env: grpcBackendEnv(a), Dir: logs, CPU: cpu})
		if err != nil {
			return nil, "", err
		}
		if lastErr = waitGRPC(ctx, Target{Addr: a, Host: "backend"}, 10*time.Second, p); lastErr == nil {
			return p, a, nil
		}
		p.Stop(time.Second)
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
	}
	return nil, "", fmt.Errorf("grpc backend: %w", lastErr)
}
