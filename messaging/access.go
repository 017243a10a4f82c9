package messaging

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	pb "github.com/weftmesh/weft/api/discoveryv1"
)

// Access is how a broker is reached: its URLs and the TLS and credentials
// a client presents. The control plane builds it from the files an
// operator names (ClientFiles) and hands it to sidecars holding a workload
// certificate (Proto: the Certificate message's broker_access) — the way
// the embedded broker's password reaches them — so that a sidecar on
// another host needs none of the files. It
// carries the files' contents, not their paths, for that reason; nats.go's
// file options (RootCAs, ClientCert, UserCredentials, NkeyOptionFromSeed)
// are replaced by their in-memory equivalents (Secure, UserJWTAndSeed,
// Nkey). Access is comparable: a Conn reconnects when it changes.
//
// Its URLs never carry credentials (URLAccess and Load move a URL's
// userinfo into User and Password, or Token), so they can be logged and
// shown as they are; String and LogValue show the access redacted.
type Access struct {
	// URLs are comma-separated, without userinfo.
	URLs     string
	User     string
	Password string
	// Token is a NATS authorization token (nats://TOKEN@host).
	Token string
	// CA is PEM: the broker's certificate is verified by it (TLS on).
	CA string
	// Cert and Key are a PEM client certificate and its key.
	Cert string
	Key  string
	// Creds is a .creds file's contents: a user JWT and its NKey seed.
	Creds string
	// NKey is an NKey user seed (SU…).
	NKey string
}

// ClientFiles are the files and credentials an operator gives for an
// external NATS (weft control --nats-*). Empty fields are not used.
type ClientFiles struct {
	CA, Cert, Key  string // --nats-tls-ca, --nats-tls-cert, --nats-tls-key
	Creds          string // --nats-creds
	NKey           string // --nats-nkey (a seed file)
	User, Password string // --nats-user, --nats-password
}

// Empty reports whether nothing is set.
func (f ClientFiles) Empty() bool { return f == ClientFiles{} }

// Load reads the files and checks them, with one clear line naming the
// flag for anything unreadable or not what the flag wants.
func (f ClientFiles) Load(urls string) (Access, error) {
	a, mixed := splitUserinfo(urls)
	if mixed {
		return a, errors.New("--broker: its URLs carry different users or passwords; give one user with --nats-user/--nats-password")
	}
	inURL := a.User != "" || a.Token != ""
	if inURL && (f.User != "" || f.Password != "") {
		return a, errors.New("--broker's URL carries a user and --nats-user/--nats-password are given: give one")
	}
	if !inURL {
		a.User, a.Password = f.User, f.Password
	}
	if (f.Cert == "") != (f.Key == "") {
		return a, errors.New("--nats-tls-cert and --nats-tls-key go together: give both or neither")
	}
	if f.Password != "" && f.User == "" {
		return a, errors.New("--nats-password needs --nats-user")
	}
	n := 0
	for _, s := range []string{f.Creds, f.NKey, a.User + a.Token} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return a, errors.New("--nats-creds, --nats-nkey and --nats-user (or a user in --broker's URL) are alternatives: give one")
	}
	read := func(flag, path string) (string, error) {
		if path == "" {
			return "", nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s: %w", flag, err)
		}
		if len(b) > 1<<20 {
			return "", fmt.Errorf("%s %s: larger than 1 MiB", flag, path)
		}
		return string(b), nil
	}
	var err error
	if a.CA, err = read("--nats-tls-ca", f.CA); err != nil {
		return a, err
	}
	if a.Cert, err = read("--nats-tls-cert", f.Cert); err != nil {
		return a, err
	}
	if a.Key, err = read("--nats-tls-key", f.Key); err != nil {
		return a, err
	}
	if a.Creds, err = read("--nats-creds", f.Creds); err != nil {
		return a, err
	}
	if a.NKey, err = read("--nats-nkey", f.NKey); err != nil {
		return a, err
	}
	if _, err := a.Options(); err != nil {
		return a, err
	}
	return a, nil
}

// URLAccess is the access a bare URL list gives (the Hello's, or an older
// control plane's broker_url): the URLs without userinfo, and the first
// userinfo found as User and Password, or Token.
func URLAccess(urls string) Access {
	a, _ := splitUserinfo(urls)
	return a
}

// splitUserinfo takes the userinfo out of each of a comma-separated list
// of URLs; mixed reports URLs carrying different ones (a is the first's).
// A user without a password is a NATS token, as nats.go reads it.
func splitUserinfo(urls string) (a Access, mixed bool) {
	parts := strings.Split(urls, ",")
	var first *url.Userinfo
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			continue
		}
		if first == nil {
			first = u.User
		} else if first.String() != u.User.String() {
			mixed = true
		}
		u.User = nil
		parts[i] = u.String()
	}
	a.URLs = strings.Join(parts, ",")
	if first != nil {
		if pw, ok := first.Password(); ok {
			a.User, a.Password = first.Username(), pw
		} else {
			a.Token = first.Username()
		}
	}
	return a, mixed
}

// Redacted is the URLs as the API shows them: nats://redacted@… when a
// user, password or token goes with them.
func (a Access) Redacted() string {
	if a.User == "" && a.Password == "" && a.Token == "" {
		return a.URLs
	}
	parts := strings.Split(a.URLs, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.Host != "" {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// String shows the access without its secrets: the URLs (Redacted) and
// which kinds of credentials it holds.
func (a Access) String() string {
	var with []string
	for _, k := range []struct{ name, v string }{{"user", a.User}, {"token", a.Token}, {"ca", a.CA},
		{"cert", a.Cert}, {"creds", a.Creds}, {"nkey", a.NKey}} {
		if k.v != "" {
			with = append(with, k.name)
		}
	}
	if len(with) == 0 {
		return a.URLs
	}
	return a.Redacted() + " (with " + strings.Join(with, ", ") + ")"
}

// LogValue keeps an Access logged whole (slog's JSON handler would
// print its fields) to what String shows.
func (a Access) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Proto is the access as the control plane hands it to sidecars.
func (a Access) Proto() *pb.BrokerAccess {
	return &pb.BrokerAccess{Urls: a.URLs, User: a.User, Password: a.Password, Token: a.Token,
		CaPem: []byte(a.CA), CertPem: []byte(a.Cert), KeyPem: []byte(a.Key),
		Creds: []byte(a.Creds), NkeySeed: []byte(a.NKey)}
}

// AccessFromProto reads what Proto wrote; nil is no access (zero). A
// control plane of an older version put the embedded broker's password in
// the URLs: it is moved to User and Password.
func AccessFromProto(p *pb.BrokerAccess) Access {
	a := Access{URLs: p.GetUrls(), User: p.GetUser(), Password: p.GetPassword(), Token: p.GetToken(),
		CA: string(p.GetCaPem()), Cert: string(p.GetCertPem()), Key: string(p.GetKeyPem()),
		Creds: string(p.GetCreds()), NKey: string(p.GetNkeySeed())}
	if u := URLAccess(a.URLs); u.URLs != a.URLs {
		a.URLs = u.URLs
		if a.User == "" && a.Token == "" {
			a.User, a.Password, a.Token = u.User, u.Password, u.Token
		}
	}
	return a
}

// Options are the nats.go options for the TLS and credentials.
func (a Access) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if a.User != "" {
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.Token != "" {
		opts = append(opts, nats.Token(a.Token))
	}
	if a.CA != "" || a.Cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if a.CA != "" {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM([]byte(a.CA)) {
				return nil, errors.New("--nats-tls-ca: no PEM certificate in the file")
			}
			tc.RootCAs = pool
		}
		if a.Cert != "" {
			c, err := tls.X509KeyPair([]byte(a.Cert), []byte(a.Key))
			if err != nil {
				return nil, fmt.Errorf("--nats-tls-cert/--nats-tls-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{c}
		}
		opts = append(opts, nats.Secure(tc))
	}
	if a.Creds != "" {
		jwt, err := nkeys.ParseDecoratedJWT([]byte(a.Creds))
		if err != nil || !strings.HasPrefix(jwt, "eyJ") {
			return nil, errors.New("--nats-creds: not a NATS credentials file (no user JWT in it)")
		}
		kp, err := nkeys.ParseDecoratedNKey([]byte(a.Creds))
		if err != nil {
			return nil, fmt.Errorf("--nats-creds: no user seed in it: %w", err)
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, fmt.Errorf("--nats-creds: %w", err)
		}
		opts = append(opts, nats.UserJWTAndSeed(jwt, string(seed)))
	}
	if a.NKey != "" {
		kp, err := nkeys.ParseDecoratedNKey([]byte(a.NKey))
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: not an NKey seed file: %w", err)
		}
		pub, err := kp.PublicKey()
		if err != nil || !nkeys.IsValidPublicUserKey(pub) {
			return nil, errors.New("--nats-nkey: not a user seed (SU…)")
		}
		opts = append(opts, nats.Nkey(pub, kp.Sign))
	}
	return opts, nil
}

// Explain turns a connection error into one line saying which flag of
// weft control to check: credentials refused, TLS failing, or the broker
// wanting TLS or credentials it was not given.
func (a Access) Explain(err error) error {
	if err == nil {
		return nil
	}
	msg := strings.ToLower(err.Error())
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	var cie x509.CertificateInvalidError
	switch {
	case errors.Is(err, nats.ErrAuthorization) || strings.Contains(msg, "authorization violation"):
		return fmt.Errorf("the broker refused our credentials (%w): %s", err, a.credHint())
	case errors.Is(err, nats.ErrAuthExpired) || strings.Contains(msg, "expired"):
		return fmt.Errorf("the broker says our credentials expired (%w): %s", err, a.credHint())
	case errors.As(err, &uae):
		return fmt.Errorf("TLS to the broker failed: its certificate is not signed by a CA we trust (%w): check --nats-tls-ca", err)
	case errors.As(err, &hne):
		return fmt.Errorf("TLS to the broker failed: its certificate is not for this host (%w): use the name it was issued for in --broker", err)
	case errors.As(err, &cie):
		return fmt.Errorf("TLS to the broker failed (%w): check the broker's certificate and --nats-tls-ca", err)
	case strings.Contains(msg, "certificate required") || strings.Contains(msg, "bad certificate"):
		return fmt.Errorf("TLS to the broker failed: it wants a client certificate we did not give or it does not accept (%w): check --nats-tls-cert/--nats-tls-key", err)
	case strings.Contains(msg, "closed by remote after tls handshake"):
		// How a broker refuses a client certificate when our first write
		// beats its alert (TLS 1.3 checks it after the handshake).
		return fmt.Errorf("TLS to the broker failed: it closed the connection after the handshake, as it does when it wants a client certificate we did not give or it does not accept (%w): check --nats-tls-cert/--nats-tls-key", err)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Errorf("the broker requires TLS (%w): give --nats-tls-ca (or use a tls:// URL)", err)
	case errors.Is(err, nats.ErrSecureConnWanted):
		return fmt.Errorf("the broker does not serve TLS (%w): drop --nats-tls-ca/--nats-tls-cert or use a nats:// URL", err)
	case strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:"):
		return fmt.Errorf("TLS to the broker failed (%w): check --nats-tls-ca and --nats-tls-cert/--nats-tls-key", err)
	}
	return err
}

// Refused reports whether err is the broker refusing us for good (wrong
// credentials or TLS), as opposed to it being down.
func (a Access) Refused(err error) bool {
	return err != nil && a.Explain(err).Error() != err.Error()
}

func (a Access) credHint() string {
	switch {
	case a.Creds != "":
		return "check --nats-creds"
	case a.NKey != "":
		return "check --nats-nkey (and that the broker lists its public key)"
	case a.User != "":
		return "check --nats-user/--nats-password"
	case a.Token != "":
		return "check the token in the --broker URL"
	}
	return "the broker needs credentials: give --nats-creds, --nats-nkey or --nats-user/--nats-password"
}
