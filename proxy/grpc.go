package proxy

import (
	"net/http"
	"strings"
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
	for _, k := range []string{"Grpc-Status", "Grpc-Message", "Grpc-Status-Details-Bin"} {
		if v, ok := resp.Header[k]; ok {
			resp.Trailer[k] = v
			resp.Header.Del(k)
		}
	}
	return nil
}
