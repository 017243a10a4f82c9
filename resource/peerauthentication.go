package resource

import (
	"encoding/json"
	"fmt"
)

// KindPeerAuthentication sets what one service's inbound ports accept,
// overriding the mesh's `weft control --mtls`: strict (mutual TLS only) or
// permissive (mutual TLS or plaintext).
const KindPeerAuthentication = "PeerAuthentication"

// PeerAuthenticationSpec is the spec of a PeerAuthentication.
type PeerAuthenticationSpec struct {
	Service string `json:"service"`
	// Mode is strict or permissive.
	Mode string `json:"mode"`
}

// ParsePeerAuthenticationSpec decodes a spec strictly and validates it.
func ParsePeerAuthenticationSpec(raw json.RawMessage) (PeerAuthenticationSpec, error) {
	var s PeerAuthenticationSpec
	if err := decodeSpec(raw, &s); err != nil {
		return s, err
	}
	if err := ValidateName(s.Service); err != nil {
		return s, fmt.Errorf("service: %w", err)
	}
	if s.Mode != "strict" && s.Mode != "permissive" {
		return s, fmt.Errorf("mode: %q: want strict or permissive", s.Mode)
	}
	return s, nil
}

func init() {
	registerKind(Kind{
		Name: KindPeerAuthentication,
		Spec: func() any { return PeerAuthenticationSpec{} },
		Validate: func(spec json.RawMessage) error {
			_, err := ParsePeerAuthenticationSpec(spec)
			return err
		},
		Target: func(spec json.RawMessage) string {
			var s PeerAuthenticationSpec
			_ = json.Unmarshal(spec, &s)
			return "service " + s.Service
		},
		Service: func(spec json.RawMessage) string {
			var s PeerAuthenticationSpec
			_ = json.Unmarshal(spec, &s)
			return s.Service
		},
	})
}
