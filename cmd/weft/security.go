package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/security/ca"
	"github.com/weftmesh/weft/sidecar"
)

// addControlSecurityFlags adds the control plane's mesh-identity flags.
func addControlSecurityFlags(f *pflag.FlagSet, c *control.SecurityConfig) {
	f.StringVar(&c.TrustDomain, "trust-domain", ca.DefaultTrustDomain, "SPIFFE trust domain of every workload identity (spiffe://TD/ns/NS/sa/SERVICE)")
	f.StringVar(&c.CACert, "ca-cert", "", "PEM file of your CA certificate (e.g. an intermediate of your PKI; may hold the chain up to the root); default: a root made on first start and kept in --data-dir")
	f.StringVar(&c.CAKey, "ca-key", "", "PEM file of the --ca-cert key")
	f.DurationVar(&c.CertTTL, "cert-ttl", ca.DefaultLeafTTL, "lifetime of workload certificates (sidecars renew at half of it)")
	f.BoolVar(&c.APIAuth, "api-auth", false, "require a token on the whole JSON API (admin: apply, delete, tokens; read: get, stat, traces, top); token management and CA rotation need an admin token always")
	f.BoolVar(&c.BrokerAuth, "broker-auth", true, "make the embedded broker require a password that only sidecars holding a workload certificate get, so apps on the host cannot dial NATS directly (--broker-auth=false to turn it off)")
	f.StringVar(&c.ControlTLS, "control-tls", "auto", "TLS on the gRPC port, with a certificate of the mesh CA that sidecars verify: auto (when not bound to loopback), on, off")
	f.StringVar(&c.MTLS, "mtls", "permissive", "what sidecars' inbound ports accept: permissive (mutual TLS, which sidecars always use with each other, or plaintext) or strict (mutual TLS only)")
}

// addNATSFlags adds the TLS and credential flags of an external NATS
// (--broker nats://…). The control plane reads the files at start and hands
// their contents to sidecars holding a workload certificate, as it does the
// embedded broker's password.
func addNATSFlags(f *pflag.FlagSet, n *messaging.ClientFiles) {
	f.StringVar(&n.CA, "nats-tls-ca", "", "PEM file of the CA that signed the external NATS's certificate (turns TLS on)")
	f.StringVar(&n.Cert, "nats-tls-cert", "", "PEM client certificate presented to the external NATS (with --nats-tls-key)")
	f.StringVar(&n.Key, "nats-tls-key", "", "PEM key of --nats-tls-cert")
	f.StringVar(&n.Creds, "nats-creds", "", "NATS .creds file (user JWT and seed) for the external NATS")
	f.StringVar(&n.NKey, "nats-nkey", "", "file holding an NKey user seed (SU…) for the external NATS")
	f.StringVar(&n.User, "nats-user", "", "user name for the external NATS")
	f.StringVar(&n.Password, "nats-password", "", "password of --nats-user (env WEFT_NATS_PASSWORD keeps it out of the process list)")
}

// addSecurity adds a sidecar's identity flags.
func (s *sidecarFlags) addSecurity(f *pflag.FlagSet) {
	f.StringVar(&s.cfg.Namespace, "namespace", "default", "namespace of this instance's identity (spiffe://TD/ns/NAMESPACE/sa/SERVICE)")
	f.StringVar(&s.cfg.CABundle, "ca-bundle", "", "PEM file of the mesh CA (the control plane's DATA-DIR/ca.pem) by which the control plane's TLS certificate is verified (default: the local file a control plane on this machine writes when its gRPC port is TLS)")
	f.StringVar(&s.cfg.TokenFile, "token-file", "", "file holding the join token, or a pod's projected Kubernetes ServiceAccount token (re-read for every CSR, so a rotated token is used; default: --token, $WEFT_TOKEN, or the local token file the control plane writes on this machine)")
}

// addTokenFlag adds --token to every command: the API token of CLI
// commands, the join token of `weft sidecar` and `weft run`. Given, it
// stands for $WEFT_TOKEN for the command.
func addTokenFlag(root *cobra.Command) {
	var tok string
	root.PersistentFlags().StringVar(&tok, "token", "", "token for the control plane: an API token (admin or read) for CLI commands, a join token for weft sidecar/run (env WEFT_TOKEN; default: the local token file the control plane writes on this machine)")
	prev := root.PersistentPreRunE // the global flags' check: keep it
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if prev != nil {
			if err := prev(cmd, args); err != nil {
				return err
			}
		}
		if tok != "" {
			return os.Setenv("WEFT_TOKEN", tok)
		}
		return nil
	}
}

func newTokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke join and API tokens (needs an admin token)"}
	create := &cobra.Command{
		Use:   "create --service S [--ttl D] | --role admin|read",
		Short: "Create a join token for one service, or an API token; prints the secret once",
		Args:  cobra.NoArgs,
	}
	server := serverFlag(create)
	var req control.TokenRequestJSON
	var ttl time.Duration
	create.Flags().StringVar(&req.Service, "service", "", "the service a join token lets a sidecar register as")
	create.Flags().StringVar(&req.Role, "role", "join", "join, admin or read")
	create.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default: until revoked)")
	create.Flags().StringVar(&req.Description, "description", "", "a note shown by weft token list")
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := apiclient.New(*server)
		if err != nil {
			return err
		}
		if ttl > 0 {
			req.TTL = ttl.String()
		}
		res, err := c.CreateToken(cmd.Context(), req)
		if err != nil {
			return err
		}
		fmt.Fprintln(cmd.OutOrStdout(), res.Token)
		return nil
	}
	list := &cobra.Command{Use: "list", Short: "List tokens (not their secrets)", Args: cobra.NoArgs}
	lserver := serverFlag(list)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := apiclient.New(*lserver)
		if err != nil {
			return err
		}
		ts, err := c.Tokens(cmd.Context())
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tROLE\tSERVICE\tEXPIRES\tDESCRIPTION")
		for _, t := range ts {
			exp := "never"
			if !t.Expires.IsZero() {
				exp = t.Expires.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Role, dash(t.Service), exp, dash(t.Description))
		}
		return tw.Flush()
	}
	revoke := &cobra.Command{Use: "revoke ID", Short: "Revoke a token", Args: cobra.ExactArgs(1)}
	rserver := serverFlag(revoke)
	revoke.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := apiclient.New(*rserver)
		if err != nil {
			return err
		}
		return c.RevokeToken(cmd.Context(), args[0])
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func getCerts(ctx context.Context, c *apiclient.Client, output string, out io.Writer) error {
	res, err := c.Certs(ctx)
	if err != nil {
		return err
	}
	if output != "table" {
		return printJSON(out, res)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "trust domain %s, mTLS %s, %d root(s)\n", res.TrustDomain, res.Mode, len(res.Roots))
	fmt.Fprintln(tw, "SERVICE\tINSTANCE\tSPIFFE ID\tSERIAL\tEXPIRES")
	for _, x := range res.Certs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", x.Service, dash(x.Instance), x.SPIFFEID, x.Serial, x.NotAfter.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func newIdentityCmd() *cobra.Command {
	var admin, output string
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Show a sidecar's workload identity: SPIFFE ID, serial, expiry, mTLS mode and handshake counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/identity", nil)
			if err != nil {
				return fmt.Errorf("--admin %q: %w", admin, err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("sidecar admin at %s unreachable: %w", admin, err)
			}
			defer resp.Body.Close()
			var v sidecar.IdentityView
			if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
				return fmt.Errorf("unreadable answer from %s: %w", admin, err)
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), v)
			}
			w := cmd.OutOrStdout()
			if v.SPIFFEID == "" {
				fmt.Fprintf(w, "no workload certificate yet (trust domain %s, mTLS %s)\n", v.TrustDomain, v.Mode)
				return nil
			}
			fmt.Fprintf(w, "SPIFFE ID   %s\nserial      %s\nvalid       %s … %s\nmTLS        %s\nhandshakes  %d (%d resumed), %d plaintext accepted\n",
				v.SPIFFEID, v.Serial, v.NotBefore.UTC().Format(time.RFC3339), v.NotAfter.UTC().Format(time.RFC3339), v.Mode, v.Handshakes, v.Resumed, v.Plaintext)
			for r, n := range v.Failures {
				fmt.Fprintf(w, "refused     %d %s\n", n, r)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&admin, "admin", sidecar.DefaultAdmin, "the sidecar's admin address")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}
