package tracestore

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// MaxRequestBytes bounds one OTLP/HTTP request body (after decompression).
const MaxRequestBytes = 8 << 20

// Receiver takes OTLP trace exports into a Store.
type Receiver struct {
	collectorpb.UnimplementedTraceServiceServer
	store *Store
	log   *slog.Logger
}

// NewReceiver returns a receiver feeding store.
func NewReceiver(store *Store, log *slog.Logger) *Receiver {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Receiver{store: store, log: log}
}

var _ collectorpb.TraceServiceServer = (*Receiver)(nil)

// Export is the OTLP/gRPC TraceService method.
func (rc *Receiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	rc.Ingest(req)
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// ServeHTTP is OTLP/HTTP: POST /v1/traces with a protobuf
// ExportTraceServiceRequest, optionally gzip-encoded.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "OTLP/HTTP: POST only", http.StatusMethodNotAllowed)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-protobuf") {
		http.Error(w, fmt.Sprintf("OTLP/HTTP: Content-Type %q not supported; send application/x-protobuf", ct), http.StatusUnsupportedMediaType)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, MaxRequestBytes)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, "OTLP/HTTP: bad gzip body", http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	default:
		http.Error(w, fmt.Sprintf("OTLP/HTTP: Content-Encoding %q not supported", enc), http.StatusUnsupportedMediaType)
		return
	}
	// Decompressed size is bounded too: a small gzip bomb stays small.
	data, err := io.ReadAll(io.LimitReader(body, MaxRequestBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, "OTLP/HTTP: body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "OTLP/HTTP: reading body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(data) > MaxRequestBytes {
		http.Error(w, "OTLP/HTTP: body too large", http.StatusRequestEntityTooLarge)
		return
	}
	req := &collectorpb.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(data, req); err != nil {
		http.Error(w, "OTLP/HTTP: not an ExportTraceServiceRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	rc.Ingest(req)
	out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// Ingest stores every well-formed span of req; spans with malformed ids
// are skipped.
func (rc *Receiver) Ingest(req *collectorpb.ExportTraceServiceRequest) {
	for _, rs := range req.GetResourceSpans() {
		service, instance := "", ""
		for _, kv := range rs.GetResource().GetAttributes() {
			switch kv.GetKey() {
			case "service.name":
				service = clip(kv.GetValue().GetStringValue(), maxNameLen)
			case "service.instance.id":
				instance = clip(kv.GetValue().GetStringValue(), maxNameLen)
			}
		}
		if service == "" {
			service = "unknown"
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				id, s, ok := convert(sp, service, instance)
				if ok {
					rc.store.Add(id, s)
				}
			}
		}
	}
}

func convert(sp *tracepb.Span, service, instance string) ([16]byte, Span, bool) {
	var id [16]byte
	if len(sp.GetTraceId()) != 16 || len(sp.GetSpanId()) != 8 {
		return id, Span{}, false
	}
	copy(id[:], sp.GetTraceId())
	if id == [16]byte{} {
		return id, Span{}, false
	}
	out := Span{
		SpanID:     hex.EncodeToString(sp.GetSpanId()),
		Service:    service,
		Instance:   instance,
		Name:       clip(sp.GetName(), maxNameLen),
		Kind:       kindName(sp.GetKind()),
		Start:      time.Unix(0, int64(sp.GetStartTimeUnixNano())).UTC(),
		Attributes: map[string]any{},
	}
	if p := sp.GetParentSpanId(); len(p) == 8 {
		out.ParentSpanID = hex.EncodeToString(p)
	}
	if e, s := sp.GetEndTimeUnixNano(), sp.GetStartTimeUnixNano(); e > s {
		out.DurationMs = float64(e-s) / 1e6
	}
	if sp.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		out.Status = "error"
	}
	for i, kv := range sp.GetAttributes() {
		if i >= maxAttributes {
			break
		}
		out.Attributes[clip(kv.GetKey(), maxNameLen)] = value(kv.GetValue())
	}
	return id, out, true
}

func kindName(k tracepb.Span_SpanKind) string {
	switch k {
	case tracepb.Span_SPAN_KIND_SERVER:
		return "server"
	case tracepb.Span_SPAN_KIND_CLIENT:
		return "client"
	case tracepb.Span_SPAN_KIND_PRODUCER:
		return "producer"
	case tracepb.Span_SPAN_KIND_CONSUMER:
		return "consumer"
	}
	return "internal"
}

// value flattens an attribute value to JSON; arrays and maps become their
// text form, cut to maxValueLen.
func value(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return clip(x.StringValue, maxValueLen)
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return clip(hex.EncodeToString(x.BytesValue), maxValueLen)
	case nil:
		return nil
	}
	return clip(fmt.Sprint(v), maxValueLen)
}
