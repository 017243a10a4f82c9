// Package token holds the control plane's bearer tokens: join tokens,
// which let a sidecar claim one service's identity, and API tokens with a
// role (admin: apply, delete, tokens, CA rotation — and joining as any
// service; read: get, stat, traces, top). Only a SHA-256 of each secret is
// stored; the secret is shown once, when created.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Roles.
const (
	RoleAdmin = "admin"
	RoleRead  = "read"
	RoleJoin  = "join"
)

// Store persists tokens (the control plane's bbolt file).
type Store interface {
	GetSecret(name string) ([]byte, error)
	PutSecret(name string, value []byte) error
}

const secretName = "tokens"

// Token is one token's record (never its secret).
type Token struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Service     string    `json:"service,omitempty"` // for join tokens
	Description string    `json:"description,omitempty"`
	Created     time.Time `json:"created"`
	Expires     time.Time `json:"expires,omitzero"` // zero: never
	Hash        string    `json:"hash"`
}

// Errors of Check.
var (
	ErrMissing = errors.New("no token")
	ErrInvalid = errors.New("token not recognised (revoked, from another control plane, or mistyped)")
	ErrExpired = errors.New("token expired")
)

// Manager is safe for concurrent use.
type Manager struct {
	st  Store
	now func() time.Time

	mu     sync.RWMutex
	byHash map[string]*Token
}

// Open loads the tokens.
func Open(st Store) (*Manager, error) {
	m := &Manager{st: st, now: time.Now, byHash: map[string]*Token{}}
	if st == nil {
		return m, nil
	}
	b, err := st.GetSecret(secretName)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	if b != nil {
		var list []*Token
		if err := json.Unmarshal(b, &list); err != nil {
			return nil, fmt.Errorf("tokens: stored state: %w", err)
		}
		for _, t := range list {
			m.byHash[t.Hash] = t
		}
	}
	return m, nil
}

func hashOf(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Create makes a token; the secret is returned once.
func (m *Manager) Create(role, service, description string, ttl time.Duration) (string, Token, error) {
	switch role {
	case RoleAdmin, RoleRead:
		if service != "" {
			return "", Token{}, errors.New("--service is for join tokens only")
		}
	case RoleJoin:
		if service == "" {
			return "", Token{}, errors.New("a join token needs --service")
		}
	default:
		return "", Token{}, fmt.Errorf("role %q: want join, admin or read", role)
	}
	if ttl < 0 {
		return "", Token{}, errors.New("--ttl must not be negative")
	}
	var id [6]byte
	var sec [32]byte
	_, _ = rand.Read(id[:])
	_, _ = rand.Read(sec[:])
	t := Token{ID: hex.EncodeToString(id[:]), Role: role, Service: service, Description: description, Created: m.now().UTC()}
	if ttl > 0 {
		t.Expires = t.Created.Add(ttl)
	}
	secret := "weft_" + role + "_" + t.ID + "_" + base64.RawURLEncoding.EncodeToString(sec[:])
	t.Hash = hashOf(secret)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.byHash[t.Hash] = &t
	if err := m.persistLocked(); err != nil {
		delete(m.byHash, t.Hash)
		return "", Token{}, err
	}
	return secret, t, nil
}

func (m *Manager) persistLocked() error {
	if m.st == nil {
		return nil
	}
	list := make([]*Token, 0, len(m.byHash))
	for _, t := range m.byHash {
		list = append(list, t)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	return m.st.PutSecret(secretName, b)
}

// Check returns the token a secret stands for.
func (m *Manager) Check(secret string) (Token, error) {
	secret = strings.TrimSpace(secret)
	if secret == "" {
		return Token{}, ErrMissing
	}
	m.mu.RLock()
	t := m.byHash[hashOf(secret)]
	m.mu.RUnlock()
	if t == nil {
		return Token{}, ErrInvalid
	}
	if !t.Expires.IsZero() && m.now().After(t.Expires) {
		return Token{}, fmt.Errorf("%w at %s", ErrExpired, t.Expires.Format(time.RFC3339))
	}
	return *t, nil
}

// MayJoin says whether a token lets a sidecar claim service.
func (t Token) MayJoin(service string) error {
	switch {
	case t.Role == RoleAdmin:
		return nil
	case t.Role == RoleJoin && t.Service == service:
		return nil
	case t.Role == RoleJoin:
		return fmt.Errorf("this join token is for service %q, not %q", t.Service, service)
	}
	return fmt.Errorf("a %s token cannot join the mesh; create one with weft token create --service %s", t.Role, service)
}

// List returns every token, oldest first.
func (m *Manager) List() []Token {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Token, 0, len(m.byHash))
	for _, t := range m.byHash {
		c := *t
		c.Hash = ""
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Created.Before(out[j].Created) || out[i].Created.Equal(out[j].Created) && out[i].ID < out[j].ID
	})
	return out
}

// Revoke deletes a token by id.
func (m *Manager) Revoke(id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, t := range m.byHash {
		if t.ID == id {
			delete(m.byHash, h)
			return m.persistLocked()
		}
	}
	return fmt.Errorf("no token with id %q", id)
}

// LocalFile is the path of the local token file under the user's
// config directory for a control-plane address (host:port): the control
// plane writes one for each of its addresses, and the CLI and sidecars on
// this machine read the one of the address they talk to.
func LocalFile(addr string) (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		// No $HOME (a bare CI runner): a per-user directory in /tmp.
		dir = filepath.Join(os.TempDir(), "weft-"+strconv.Itoa(os.Getuid()))
	}
	return filepath.Join(dir, "weft", "tokens", strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(addr)), nil
}

// WriteFile writes a secret to path, readable by its owner only.
func WriteFile(path, secret string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadFile reads a token file ("" and no error when it does not exist).
func ReadFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Resolve finds the token a command uses: the flag, else $WEFT_TOKEN,
// else the file given, else the local token file of addr.
func Resolve(flag, file, addr string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if v := os.Getenv("WEFT_TOKEN"); v != "" {
		return v, nil
	}
	if file != "" {
		t, err := ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		if t == "" {
			return "", fmt.Errorf("--token-file %s: no such file", file)
		}
		return t, nil
	}
	p, err := LocalFile(addr)
	if err != nil {
		return "", nil
	}
	return ReadFile(p)
}

// PruneLocal removes local token files (and CA files beside them) of
// loopback control-plane addresses where nothing listens any more — left by
// control planes that were killed rather than stopped. At most max files
// are looked at; each look is one loopback connect.
func PruneLocal(max int) {
	p, err := LocalFile("x")
	if err != nil {
		return
	}
	dir := filepath.Dir(p)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	dead := map[string]bool{}
	for i, e := range entries {
		if i >= max {
			break
		}
		name := strings.TrimSuffix(e.Name(), ".ca.pem")
		k := strings.LastIndexByte(name, '_')
		if k <= 0 {
			continue
		}
		host, port := name[:k], name[k+1:]
		if host != "127.0.0.1" && host != "localhost" {
			continue
		}
		addr := net.JoinHostPort(host, port)
		gone, seen := dead[addr]
		if !seen {
			// Only a refused connection proves nobody serves there: a
			// timeout on a loaded machine must not delete a live control
			// plane's token file.
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			gone = errors.Is(err, syscall.ECONNREFUSED)
			if c != nil {
				c.Close()
			}
			dead[addr] = gone
		}
		if gone {
			// A control plane that has just taken the port over writes its
			// file after binding: a file this young may be its, written
			// between the refused connect and now, so it stays.
			path := filepath.Join(dir, e.Name())
			if fi, err := os.Stat(path); err == nil && time.Since(fi.ModTime()) > pruneMinAge {
				_ = os.Remove(path)
			}
		}
	}
}

// pruneMinAge spares files written so recently that their control plane
// may have started after the connect that found the port free.
const pruneMinAge = 30 * time.Second
