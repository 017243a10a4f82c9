package control

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/weftmesh/weft/dashboard"
)

// The dashboard's login. A browser cannot read the local token file, so
// `weft dashboard` (which can) asks POST /api/v1/login, with its token, for
// a one-time code and prints /login?code=…; opening it within a minute
// sets an HttpOnly, SameSite=Strict session cookie standing for that
// token (until the token is revoked or expires, at most sessionTTL), and
// redirects to the dashboard. The code is good once; the token itself never
// reaches the browser's history. The dashboard's token dialog stays for a
// browser given no code.

const (
	loginCodeTTL = time.Minute
	sessionTTL   = 12 * time.Hour
	maxSessions  = 1024 // oldest dropped first; each is a few dozen bytes
	maxCodes     = 64
)

// LoginJSON answers POST /api/v1/login: the path (with the one-time code)
// a browser opens on this control plane.
type LoginJSON struct {
	Path    string    `json:"path"`
	Expires time.Time `json:"expires,omitzero"`
}

type grant struct {
	secret  string // the token it stands for, re-checked at each use
	expires time.Time
}

// sessions holds login codes and sessions, both by random id.
type sessions struct {
	mu       sync.Mutex
	codes    map[string]grant
	sessions map[string]grant
}

func newID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// put adds g under a new id to m, dropping expired entries, and the
// soonest to expire past limit.
func put(m map[string]grant, g grant, limit int) string {
	now := time.Now()
	for k, v := range m {
		if now.After(v.expires) {
			delete(m, k)
		}
	}
	for len(m) >= limit {
		var oldest string
		for k, v := range m {
			if oldest == "" || v.expires.Before(m[oldest].expires) {
				oldest = k
			}
		}
		delete(m, oldest)
	}
	id := newID()
	m[id] = g
	return id
}

func (s *sessions) newCode(secret string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return put(s.codes, grant{secret: secret, expires: time.Now().Add(loginCodeTTL)}, maxCodes)
}

// redeem turns a code into a session (once).
func (s *sessions) redeem(code string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.codes[code]
	delete(s.codes, code)
	if !ok || time.Now().After(g.expires) {
		return "", false
	}
	return put(s.sessions, grant{secret: g.secret, expires: time.Now().Add(sessionTTL)}, maxSessions), true
}

// secretOf is the token a session cookie stands for ("" if none).
func (s *sessions) secretOf(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.sessions[id]
	if !ok || time.Now().After(g.expires) {
		delete(s.sessions, id)
		return ""
	}
	return g.secret
}

// cookieName is per port: browsers share cookies between the ports of a
// host, and two control planes on one machine must not see each other's.
func (s *Server) cookieName() string {
	return "weft_session_" + strconv.Itoa(s.httpLn.Addr().(*net.TCPAddr).Port)
}

type secretKey struct{}

// requestSecret is the token the request authenticated with (set by
// withAuth).
func requestSecret(r *http.Request) string {
	v, _ := r.Context().Value(secretKey{}).(string)
	return v
}

func withSecret(r *http.Request, secret string) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), secretKey{}, secret))
}

// sessionSecret is the token of the request's session cookie, if any. A
// state-changing request carried by a cookie must come from the dashboard's
// own origin (SameSite=Strict already keeps other sites' requests from
// carrying it; this is the second lock).
func (s *Server) sessionSecret(r *http.Request) string {
	c, err := r.Cookie(s.cookieName())
	if err != nil {
		return ""
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host && o != "https://"+r.Host {
			return ""
		}
	}
	return s.logins.secretOf(c.Value)
}

func (s *Server) loginRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/login", func(w http.ResponseWriter, r *http.Request) {
		secret := requestSecret(r)
		if secret == "" { // --api-auth=false: nothing to log in to
			writeJSON(w, http.StatusOK, LoginJSON{Path: dashboard.Prefix})
			return
		}
		code := s.logins.newCode(secret)
		writeJSON(w, http.StatusOK, LoginJSON{Path: "/login?code=" + code, Expires: time.Now().Add(loginCodeTTL).UTC()})
	})
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		code := r.URL.Query().Get("code")
		if code == "" || len(code) > 64 {
			authError(w, http.StatusBadRequest, "login: want /login?code=… as printed by weft dashboard")
			return
		}
		id, ok := s.logins.redeem(code)
		if !ok {
			authError(w, http.StatusUnauthorized, "login: this code is used or expired (each is good once, for a minute): run weft dashboard again")
			return
		}
		http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
			SameSite: http.SameSiteStrictMode, MaxAge: int(sessionTTL / time.Second)})
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, dashboard.Prefix, http.StatusSeeOther)
	})
}
