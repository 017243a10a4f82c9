package telemetry_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/test/e2e/harness"
)

// TestOTLPReceiverAuth: with --api-auth (the default) the control plane's
// OTLP receiver takes spans only with a token — the one sidecars get with
// their workload certificate, or an admin API token — over HTTP
// (POST /v1/traces) and gRPC alike; a POST without one gets 401 and one
// line saying what to send. The mesh's own spans still arrive.
func TestOTLPReceiverAuth(t *testing.T) {
	c := startControl(t)
	inv := demoUnit(t, c, "inventory", "--trace-sampling", "1")
	cl := startUnit(t, c, "client", []string{"--trace-sampling", "1"})

	// The mesh's own spans: the client's and the server's of one call.
	traceID := randomHex(32)
	h := http.Header{"Traceparent": {"00-" + traceID + "-" + randomHex(16) + "-01"}}
	if code, err := call(cl.client(), "inventory", "/stock/sku-1", h); err != nil || code != 200 {
		t.Fatalf("request: %d %v", code, err)
	}
	var tr traceJSON
	if !harness.Poll(eventually, func() bool { return getJSON(t, c.URL+"/api/v1/traces/"+traceID, &tr) == 200 && len(tr.Spans) == 2 }) {
		t.Fatalf("control plane holds %+v; want the client and server spans of the mesh", tr)
	}
	for _, u := range []*unit{inv, cl} {
		if out := u.p.ReadOutput(); strings.Contains(out, "span export failed") {
			t.Fatalf("%s: span export failed:\n%s", u.service, u.p.Tail(20))
		}
	}

	res := exec.Command(bins.Weft, "token", "create", "--role", "read", "--server", c.URL)
	out, err := res.Output()
	if err != nil {
		t.Fatalf("token create --role read: %v %s", err, out)
	}
	read := strings.TrimSpace(string(out))

	foreign := randomHex(32)
	body := spansBody(t, foreign)
	post := func(token string) (int, string, http.Header) {
		req, _ := http.NewRequest(http.MethodPost, c.URL+"/v1/traces", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-protobuf")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req) // no local token added
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header
	}
	refusals := []struct {
		name, token string
		code        int
		want        string
	}{
		{"no token", "", 401, "no token for span export: sidecars send the one they get with their workload certificate; another OTLP exporter sends an admin API token"},
		{"wrong token", "nonsense", 401, "span export token: "},
		{"read token", read, 403, "a read token may not send spans: use an admin token"},
	}
	for _, r := range refusals {
		code, msg, hdr := post(r.token)
		if code != r.code || !strings.Contains(msg, r.want) || strings.Contains(msg, "\n") {
			t.Errorf("POST /v1/traces, %s: %d %q; want %d and one line with %q", r.name, code, msg, r.code, r.want)
		}
		if code == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", r.name)
		}
		t.Logf("%s: %d %s", r.name, code, msg)
	}

	// OTLP/gRPC on the discovery port: the same rule.
	conn, err := grpc.NewClient(c.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = collectorpb.NewTraceServiceClient(conn).Export(ctx, &req)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "no token for span export") {
		t.Errorf("gRPC Export without a token: %v; want Unauthenticated saying what to send", err)
	}
	if code := getJSON(t, c.URL+"/api/v1/traces/"+foreign, &tr); code != 404 {
		t.Fatalf("refused spans were stored: GET trace %d", code)
	}

	// An exporter with an admin token is let in, over both.
	if code, msg, _ := post(c.Token()); code != 200 {
		t.Fatalf("POST /v1/traces with an admin token: %d %s", code, msg)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.Token())
	if _, err := collectorpb.NewTraceServiceClient(conn).Export(ctx, &req); err != nil {
		t.Fatalf("gRPC Export with an admin token: %v", err)
	}
	if code := getJSON(t, c.URL+"/api/v1/traces/"+foreign, &tr); code != 200 {
		t.Fatalf("spans sent with an admin token: GET trace %d", code)
	}
}

// spansBody is an OTLP/HTTP body with one span of trace traceID.
func spansBody(t *testing.T, traceID string) []byte {
	t.Helper()
	tid, _ := hex.DecodeString(traceID)
	sid, _ := hex.DecodeString(randomHex(16))
	now := uint64(time.Now().UnixNano())
	req := &collectorpb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name",
			Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "outsider"}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{TraceId: tid, SpanId: sid, Name: "GET /",
			Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: now - 1e6, EndTimeUnixNano: now}}}},
	}}}
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
