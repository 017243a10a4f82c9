package proxy

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Codes of errors the mesh itself produces, sent in the x-weft-error header.
// They are a contract: scripts and dashboards match on them.
const (
	CodeUnknownService    = "unknown_service"
	CodeNoReadyInstances  = "no_ready_instances"
	CodeConnectFailed     = "connect_failed"
	CodeUpstreamTimeout   = "upstream_timeout"
	CodeUpstreamReset     = "upstream_reset"
	CodeControlUnreach    = "control_plane_unreachable"
	CodeDiscoveryTimeout  = "discovery_timeout"
	CodeTooManyServices   = "too_many_destinations"
	CodeBadRequest        = "bad_request"
	CodeAppUnavailable    = "app_unavailable"
	CodeUnsupported       = "unsupported"
	HeaderError           = "X-Weft-Error"
	HeaderSource          = "X-Weft-Source"
	tunnelAuthorityPrefix = "weft-tcp."
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

type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Service string `json:"service,omitempty"`
}

// Write sends the error as status, x-weft-error header and a short JSON body.
func (e *MeshError) Write(w http.ResponseWriter) {
	msg := e.Message
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	body, _ := json.Marshal(errorBody{Error: e.Code, Message: msg, Service: e.Service})
	h := w.Header()
	h.Set(HeaderError, e.Code)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(e.Status)
	w.Write(append(body, '\n'))
}
