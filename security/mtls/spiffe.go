package mtls

import (
	"errors"
	"fmt"
	"strings"
)

// ID is a workload's SPIFFE identity in Weft's shape:
// spiffe://<trust-domain>/ns/<namespace>/sa/<service>.
type ID struct {
	TrustDomain, Namespace, Service string
}

// DefaultNamespace is the namespace of an instance that names none.
const DefaultNamespace = "default"

// String is the SPIFFE URI.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.Service
}

// ParseID parses a Weft workload SPIFFE ID. Anything else — another
// scheme, a query or fragment, a path of another shape, empty segments —
// is an error.
func ParseID(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, errors.New("not a spiffe:// URI")
	}
	if strings.ContainsAny(rest, "?#%@:") {
		return ID{}, errors.New("SPIFFE ID must not hold a port, userinfo, query, fragment or percent-encoding")
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok || td == "" {
		return ID{}, errors.New("no trust domain or path")
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
		return ID{}, fmt.Errorf("path %q: want /ns/<namespace>/sa/<service>", "/"+path)
	}
	return ID{TrustDomain: td, Namespace: parts[1], Service: parts[3]}, nil
}
