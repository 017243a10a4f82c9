package dashboard

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T, p string) *http.Response {
	t.Helper()
	mux := http.NewServeMux()
	Register(mux)
	mux.HandleFunc("GET /api/v1/services", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("api")) })
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", p, nil))
	return rec.Result()
}

func TestServes(t *testing.T) {
	tests := []struct {
		path, wantType, wantBody string
		code                     int
	}{
		{"/", "text/html", `<script type="module" src="/ui/js/app.js">`, 200},
		{"/ui/", "text/html", `<script type="module" src="/ui/js/app.js">`, 200},
		{"/ui/js/app.js", "text/javascript", "import", 200},
		{"/ui/style.css", "text/css", ":root", 200},
		{"/ui/js/", "", "", 404},     // no listings
		{"/ui/nope.js", "", "", 404}, // unknown asset
		{"/api/v1/services", "", "api", 200},
		{"/api/v1/unknown", "", "", 404}, // the dashboard does not swallow other paths
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp := serve(t, tt.path)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.code {
				t.Fatalf("GET %s: %d, want %d", tt.path, resp.StatusCode, tt.code)
			}
			if ct := resp.Header.Get("Content-Type"); tt.wantType != "" && !strings.HasPrefix(ct, tt.wantType) {
				t.Errorf("GET %s: Content-Type %q, want %s", tt.path, ct, tt.wantType)
			}
			if !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("GET %s: body lacks %q", tt.path, tt.wantBody)
			}
			if tt.code == 200 && tt.wantType != "" && !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
				t.Errorf("GET %s: no Content-Security-Policy", tt.path)
			}
		})
	}
}

var importRe = regexp.MustCompile(`(?m)^import .* from '([^']+)';`)

// TestModulesResolve: every module a module imports is embedded, and
// every embedded module is reachable from app.js, so a renamed file
// cannot leave a page that fails to load.
func TestModulesResolve(t *testing.T) {
	sub, _ := fs.Sub(assets, "assets")
	seen := map[string]bool{}
	var walk func(p string)
	walk = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		src, err := fs.ReadFile(sub, p)
		if err != nil {
			t.Errorf("%s is imported but not embedded: %v", p, err)
			return
		}
		for _, m := range importRe.FindAllStringSubmatch(string(src), -1) {
			walk(path.Join(path.Dir(p), m[1]))
		}
	}
	walk("js/app.js")
	_ = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if strings.HasSuffix(p, ".js") && !seen[p] {
			t.Errorf("%s is embedded but no page imports it", p)
		}
		return nil
	})
	for _, ref := range []string{"/ui/style.css", "/ui/js/app.js"} {
		if _, err := fs.Stat(sub, strings.TrimPrefix(ref, Prefix)); err != nil {
			t.Errorf("index.html refers to %s, which is not embedded", ref)
		}
	}
}

func TestPublic(t *testing.T) {
	for p, want := range map[string]bool{"/": true, "/ui/": true, "/ui/js/app.js": true, "/api/v1/stats": false, "/uix": false, "/healthz": false} {
		if got := Public(p); got != want {
			t.Errorf("Public(%q) = %v, want %v", p, got, want)
		}
	}
}
