package control

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/security/token"
)

// otlpTokenSecret names, in the store, the token the OTLP receiver wants
// with --api-auth. Kept there (like the broker's password) so sidecars'
// exports survive a restart of the control plane.
const otlpTokenSecret = "otlp-token"

// checkSpans decides whether secret may send spans to the OTLP receiver
// (POST /v1/traces, the gRPC TraceService). With --api-auth it must be the
// token sidecars get with their workload certificate (Certificate.
// otlp_token), or an admin API token (another exporter). It returns the
// HTTP status and one line for a refusal; 0 lets the spans in.
func (s *Server) checkSpans(secret string) (int, string) {
	if !s.cfg.Security.APIAuth {
		return 0, ""
	}
	secret = strings.TrimSpace(secret)
	if secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(s.otlpToken)) == 1 {
		return 0, ""
	}
	t, err := s.tokens.Check(secret)
	switch {
	case errors.Is(err, token.ErrMissing):
		return http.StatusUnauthorized, "no token for span export: sidecars send the one they get with their workload certificate; " +
			"another OTLP exporter sends an admin API token (Authorization: Bearer TOKEN, e.g. OTEL_EXPORTER_OTLP_HEADERS=\"authorization=Bearer TOKEN\")"
	case err != nil:
		return http.StatusUnauthorized, "span export token: " + err.Error()
	case t.Role != token.RoleAdmin:
		return http.StatusForbidden, fmt.Sprintf("a %s token may not send spans: use an admin token", t.Role)
	}
	return 0, ""
}

// bearerToken is the token of an Authorization value ("Bearer TOKEN"), or "".
func bearerToken(v string) string {
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return v[7:]
	}
	return ""
}

// spanReceiver is the gRPC TraceService, behind checkSpans (the token in
// the authorization metadata, as OTLP exporters send headers).
type spanReceiver struct {
	collectorpb.UnimplementedTraceServiceServer
	s *Server
}

var _ collectorpb.TraceServiceServer = (*spanReceiver)(nil)

func (r *spanReceiver) Export(ctx context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	secret := ""
	if v := md.Get("authorization"); len(v) > 0 {
		secret = bearerToken(v[0])
	}
	if code, msg := r.s.checkSpans(secret); code != 0 {
		c := codes.Unauthenticated
		if code == http.StatusForbidden {
			c = codes.PermissionDenied
		}
		return nil, status.Error(c, msg)
	}
	return r.s.receiver.Export(ctx, req)
}
