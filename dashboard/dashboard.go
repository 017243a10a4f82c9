// Package dashboard is the web UI the control plane serves on its HTTP
// port: plain HTML, CSS and JavaScript modules embedded in the binary (no
// CDN, no build step), reading the same JSON API as the CLI (/api/v1/...).
//
//	GET /        index.html
//	GET /ui/...  index.html and its assets; pages are hash routes
//	             (#/services, #/service/NAME, #/topology, #/traces,
//	             #/trace/ID, #/topics, #/resources)
//
// The assets hold no data, so they are served without credentials; every
// API call the pages make carries the token the user gives them (a 401
// makes the page ask for one).
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// Prefix is where the assets are served.
const Prefix = "/ui/"

// contentSecurity lets the pages load only their own assets and talk only
// to their own origin: no inline script, nothing from elsewhere.
const contentSecurity = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Public says whether path is one of the dashboard's own pages or assets,
// which an API guard should let through without a token: they hold no
// data, and the page must load to ask the user for the token the API wants.
func Public(path string) bool { return path == "/" || strings.HasPrefix(path, Prefix) }

// Register mounts the dashboard on mux at / and /ui/.
func Register(mux *http.ServeMux) {
	h := Handler()
	mux.Handle("GET /{$}", h)
	mux.Handle("GET "+Prefix, h)
}

// Handler serves index.html at / and the assets under /ui/.
func Handler() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix(Prefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurity)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Revalidate every time: a new binary serves new assets at the
		// same URLs.
		h.Set("Cache-Control", "no-cache")
		if r.URL.Path == "/" {
			http.ServeFileFS(w, r, sub, "index.html")
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") && r.URL.Path != Prefix {
			http.NotFound(w, r) // no directory listings
			return
		}
		files.ServeHTTP(w, r)
	})
}
