package pipeline

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Codes of errors the mesh itself produces, sent in the x-weft-error header.
// They are a contract: scripts and dashboards match on them.
const (
	CodeUnknownService   = "unknown_service"
	CodeNoReadyInstances = "no_ready_instances"
	CodeConnectFailed    = "connect_failed"
	CodeUpstreamTimeout  = "upstream_timeout"
	CodeUpstreamReset    = "upstream_reset"
	CodeControlUnreach   = "control_plane_unreachable"
	CodeDiscoveryTimeout = "discovery_timeout"
	CodeTooManyServices  = "too_many_destinations"
	CodeBadRequest       = "bad_request"
	CodeAppUnavailable   = "app_unavailable"
	CodeUnsupported      = "unsupported"
	CodeOverflow         = "overflow"
	CodeRateLimited      = "rate_limited"
	CodeFaultInjected    = "fault_injected"
	HeaderError          = "X-Weft-Error"
)

// gRPC status codes the mesh answers with.
const (
	GRPCOK                = 0
	GRPCCancelled         = 1
	GRPCUnknown           = 2
	GRPCInvalidArgument   = 3
	GRPCDeadlineExceeded  = 4
	GRPCPermissionDenied  = 7
	GRPCResourceExhausted = 8
	GRPCUnimplemented     = 12
	GRPCInternal          = 13
	GRPCUnavailable       = 14
	GRPCUnauthenticated   = 16
)

// MeshError is an error the sidecar answers itself, saying why.
type MeshError struct {
	Status  int
	Code    string
	Service string
	Message string
	Err     error
}

func (e *MeshError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *MeshError) Unwrap() error { return e.Err }

// Text is the message with its cause.
func (e *MeshError) Text() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// GRPCStatus is the gRPC status a gRPC caller gets for the error.
func (e *MeshError) GRPCStatus() int {
	switch e.Code {
	case CodeUpstreamTimeout:
		return GRPCDeadlineExceeded
	case CodeRateLimited:
		return GRPCResourceExhausted
	case CodeUnsupported:
		return GRPCUnimplemented
	case CodeBadRequest:
		if e.Status == 499 {
			return GRPCCancelled
		}
		return GRPCInternal
	case CodeFaultInjected:
		return grpcFromHTTP(e.Status)
	}
	return GRPCUnavailable
}

// grpcFromHTTP is gRPC's mapping of an HTTP status to a gRPC code
// (doc/http-grpc-status-mapping.md).
func grpcFromHTTP(status int) int {
	switch status {
	case 400:
		return GRPCInternal
	case 401:
		return GRPCUnauthenticated
	case 403:
		return GRPCPermissionDenied
	case 404:
		return GRPCUnimplemented
	case 429, 502, 503, 504:
		return GRPCUnavailable
	}
	return GRPCUnknown
}

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Service string `json:"service,omitempty"`
}

// Body is the JSON body of the HTTP answer.
func (e *MeshError) Body() []byte {
	body, _ := json.Marshal(errorBody{Error: e.Code, Message: e.Text(), Service: e.Service})
	return append(body, '\n')
}

// Write sends the error as status, x-weft-error header and a short JSON body.
func (e *MeshError) Write(w http.ResponseWriter) {
	h := w.Header()
	h.Set(HeaderError, e.Code)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	w.Write(e.Body())
}

// WriteGRPC sends the error as a gRPC trailers-only response: HTTP 200
// with grpc-status, grpc-message and x-weft-error in the one HEADERS frame
// that ends the stream, which is what gRPC clients expect of a failed call.
func (e *MeshError) WriteGRPC(w http.ResponseWriter) {
	h := w.Header()
	for k, v := range e.GRPCFields() {
		h.Set(k, v)
	}
	w.WriteHeader(http.StatusOK)
}

// WriteFor writes the error in the caller's protocol.
func (e *MeshError) WriteFor(w http.ResponseWriter, grpc bool) {
	if grpc {
		e.WriteGRPC(w)
		return
	}
	e.Write(w)
}

// GRPCFields are the fields of the gRPC answer.
func (e *MeshError) GRPCFields() map[string]string {
	return map[string]string{
		"Content-Type": "application/grpc",
		"Grpc-Status":  strconv.Itoa(e.GRPCStatus()),
		"Grpc-Message": grpcMessage(e.Code + ": " + e.Text()),
		HeaderError:    e.Code,
	}
}

// grpcMessage percent-encodes a grpc-message value as the gRPC spec asks
// (printable ASCII but '%' as is).
func grpcMessage(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			return url.PathEscape(s)
		}
	}
	return s
}
