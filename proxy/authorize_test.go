package proxy

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/weftmesh/weft/authz"
)

func TestDeniedAnswers(t *testing.T) {
	in := NewInbound("127.0.0.1:1", AppProtocolAuto, nil)
	in.Authz = &Authorizer{}
	snap, err := authz.Compile([]authz.Object{{Name: "nobody", Spec: json.RawMessage(`{"service":"orders","action":"deny"}`)}})
	if err != nil {
		t.Fatal(err)
	}
	var denials []string
	in.Authz.OnDeny = func(policy, _, _, _, _ string) { denials = append(denials, policy) }
	in.Authz.Set(snap)

	w := httptest.NewRecorder()
	in.ServeHTTP(w, httptest.NewRequest("GET", "http://orders/x", nil))
	if w.Code != 403 || w.Header().Get(HeaderError) != CodeDenied {
		t.Fatalf("HTTP: %d %v", w.Code, w.Header())
	}
	r := httptest.NewRequest("POST", "http://orders/pkg.Svc/Method", nil)
	r.ProtoMajor = 2
	r.Header.Set("Content-Type", "application/grpc")
	w = httptest.NewRecorder()
	in.ServeHTTP(w, r)
	if w.Code != 200 || w.Header().Get("Grpc-Status") != "7" || w.Header().Get(HeaderError) != CodeDenied {
		t.Fatalf("gRPC: %d %v", w.Code, w.Header())
	}
	if len(denials) != 2 || denials[0] != "nobody" {
		t.Fatalf("denials reported: %v", denials)
	}
}
