package token

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type memStore map[string][]byte

func (m memStore) GetSecret(n string) ([]byte, error) { return m[n], nil }
func (m memStore) PutSecret(n string, v []byte) error { m[n] = v; return nil }

func TestJoinAndAPITokens(t *testing.T) {
	st := memStore{}
	m, _ := Open(st)
	orders, _, err := m.Create(RoleJoin, "orders", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	read, _, _ := m.Create(RoleRead, "", "", 0)
	admin, _, _ := m.Create(RoleAdmin, "", "", 0)
	if strings.Contains(string(st[secretName]), orders) {
		t.Fatal("a secret is stored in clear")
	}
	m2, _ := Open(st) // survives a restart
	for _, tc := range []struct {
		secret, service string
		ok              bool
	}{{orders, "orders", true}, {orders, "payments", false}, {read, "orders", false}, {admin, "payments", true}} {
		tok, err := m2.Check(tc.secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.MayJoin(tc.service); (err == nil) != tc.ok {
			t.Errorf("%s token joining %s: %v", tok.Role, tc.service, err)
		}
	}
	if _, err := m2.Check(""); !errors.Is(err, ErrMissing) {
		t.Errorf("empty: %v", err)
	}
	if _, err := m2.Check(orders + "x"); !errors.Is(err, ErrInvalid) {
		t.Errorf("altered: %v", err)
	}
	m2.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := m2.Check(orders); !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	tok, _ := m2.Check(read)
	if err := m2.Revoke(tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.Check(read); !errors.Is(err, ErrInvalid) {
		t.Errorf("revoked: %v", err)
	}
	if _, _, err := m.Create(RoleJoin, "", "", 0); err == nil {
		t.Error("join token without a service")
	}
	if _, _, err := m.Create("root", "", "", 0); err == nil {
		t.Error("unknown role")
	}
}

func TestResolveOrder(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("WEFT_TOKEN", "")
	p, _ := LocalFile("127.0.0.1:15010")
	if !strings.HasPrefix(p, dir) {
		t.Fatalf("local file %s not under the config dir", p)
	}
	if err := WriteFile(p, "local"); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "f")
	_ = WriteFile(file, "fromfile")
	for _, tc := range []struct{ flag, env, file, want string }{
		{"flag", "env", file, "flag"}, {"", "env", file, "env"}, {"", "", file, "fromfile"}, {"", "", "", "local"},
	} {
		t.Setenv("WEFT_TOKEN", tc.env)
		if got, err := Resolve(tc.flag, tc.file, "127.0.0.1:15010"); err != nil || got != tc.want {
			t.Errorf("Resolve(%q, env %q, %q) = %q, %v", tc.flag, tc.env, tc.file, got, err)
		}
	}
	if _, err := Resolve("", filepath.Join(dir, "missing"), "x"); err == nil {
		t.Error("a missing --token-file is not an error")
	}
}

func TestPruneLocal(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	live, _ := LocalFile(ln.Addr().String())
	dl, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dl.Addr().String()
	dl.Close()
	dead, _ := LocalFile(deadAddr)
	old := time.Now().Add(-2 * pruneMinAge)
	for _, p := range []string{live, dead, dead + ".ca.pem"} {
		if err := WriteFile(p, "x"); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	// A dead address's file written just now may be a starting control
	// plane's: it stays.
	young, _ := LocalFile(net.JoinHostPort("127.0.0.1", "1"))
	if err := WriteFile(young, "x"); err != nil {
		t.Fatal(err)
	}
	PruneLocal(100)
	if _, err := os.Stat(young); err != nil {
		t.Errorf("a file written just now was removed: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live control plane's file removed: %v", err)
	}
	for _, p := range []string{dead, dead + ".ca.pem"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s kept", p)
		}
	}
}
