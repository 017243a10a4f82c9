package proxy

import (
	"net/http"
	"strings"
	"sync"
)

// grpcTrailersOnly rewrites a gRPC "trailers-only" response (status in the
// HEADERS frame that ends the stream, as gRPC servers send for an error with
// no messages) so that the status travels as trailers. Proxied as is, the
// status would arrive as plain headers followed by an empty DATA frame, and
// the client would report "server closed the stream without sending
// trailers" instead of the real status.
func grpcTrailersOnly(resp *http.Response) error {
	if resp.ProtoMajor != 2 || len(resp.Trailer) > 0 || resp.Header.Get("Grpc-Status") == "" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "application/grpc") {
		return nil
	}
	resp.Trailer = http.Header{}
	// The calling sidecar sees the status only after the (empty) body;
	// this copy in the head lets its pipeline decide a retry at once.
	resp.Header.Set(headerGRPCStatusHint, resp.Header.Get("Grpc-Status"))
	for _, k := range []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"} {
		if v, ok := resp.Header[k]; ok {
			resp.Trailer[k] = v
			resp.Header.Del(k)
		}
	}
	return nil
}

// headerGRPCStatusHint carries a trailers-only answer's grpc-status in the
// head from the callee's sidecar to the caller's, which removes it.
const headerGRPCStatusHint = "X-Weft-Grpc-Status"

// bufferPool lends the net/http path's reverse proxies their copy buffers;
// without one, httputil.ReverseProxy allocates 32 KiB per request.
type bufferPool struct{ p sync.Pool }

var copyBuffers = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }
