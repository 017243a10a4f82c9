package sidecar

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// The kubelet rotates a projected ServiceAccount token in place: every CSR
// (a renewal, a new stream's greeting) carries the file's current content.
func TestRequestRereadsTokenFile(t *testing.T) {
	t.Setenv("WEFT_TOKEN", "")
	file := filepath.Join(t.TempDir(), "token")
	id := newIdentity("shop", "meshed", "", slog.New(slog.DiscardHandler))
	id.tokenFile = file
	k, err := newKeyed()
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"eyJfirst.a.b", "eyJrotated.c.d"} {
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		req, err := id.request(k)
		if err != nil {
			t.Fatal(err)
		}
		if req.Token != tok || req.Namespace != "meshed" || req.Service != "shop" {
			t.Errorf("CSR carries token %q, namespace %q, service %q; want %q, meshed, shop", req.Token, req.Namespace, req.Service, tok)
		}
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if _, err := id.request(k); err == nil {
		t.Error("a CSR was made with the token file gone")
	}
}
