package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/weftmesh/weft/capture"
	"github.com/weftmesh/weft/sidecar"
)

// errCaptureRun: capture excludes the sidecar's uid, and weft run's app
// runs under it, so nothing of the app's would be captured.
var errCaptureRun = errors.New("--capture does not work with weft run: the app runs under the sidecar's uid, whose connections capture leaves alone; run the app under another uid beside `weft sidecar --capture`")

func addCaptureFlags(f *pflag.FlagSet, c *sidecar.CaptureConfig) {
	f.BoolVar(&c.Enabled, "capture", false, "transparent capture: install nftables rules in this network namespace redirecting the app's outbound TCP to this sidecar (needs CAP_NET_ADMIN; Linux), mesh HTTP to known services, pass the rest through")
	f.StringVar(&c.Addr, "capture-addr", sidecar.DefaultCaptureAddr, "with --capture: the listener redirected connections arrive on (127.0.0.1:PORT)")
	f.IntVar(&c.ExcludeUID, "capture-exclude-uid", -1, "with --capture: the uid whose connections are not redirected (default: the sidecar's own; the app must run under another uid)")
	f.BoolVar(&c.NoRules, "capture-no-rules", false, "with --capture: do not install the rules (an init step ran `weft capture`); only listen on --capture-addr")
}

func newCaptureCmd() *cobra.Command {
	var port, uid int
	var remove bool
	cmd := &cobra.Command{
		Use:   "capture",
		Short: "Install (or --remove) the transparent-capture nftables rules in this network namespace, then exit",
		Long: `Capture installs the nftables table "weft" (family ip) in the current network
namespace: every new TCP connection from a process whose uid is not
--exclude-uid, to a non-loopback IPv4 address, is redirected to
127.0.0.1:--port, where a sidecar started with --capture --capture-no-rules
listens. Meant as an init step holding CAP_NET_ADMIN, so that the sidecar
itself needs no capability. Rules go through netlink; no iptables binary.`,
		Example: `  weft capture --port 15002 --exclude-uid 65532     # init container
  weft sidecar --service web --capture --capture-no-rules --capture-addr 127.0.0.1:15002
  weft capture --remove`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if remove {
				return capture.Remove()
			}
			if port <= 0 || port > 65535 {
				return fmt.Errorf("--port %d: not a port number", port)
			}
			if uid < 0 {
				return fmt.Errorf("--exclude-uid is required: the sidecar's uid, whose connections must not be redirected")
			}
			if err := capture.Install(capture.Rules{Port: port, ExcludeUID: uint32(uid)}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "capture: table ip %s redirects outbound TCP (uid != %d, not to 127.0.0.0/8) to %s\n",
				capture.Table, uid, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			return nil
		},
	}
	_, p, _ := net.SplitHostPort(sidecar.DefaultCaptureAddr)
	def, _ := strconv.Atoi(p)
	cmd.Flags().IntVar(&port, "port", def, "the sidecar's capture port on 127.0.0.1")
	cmd.Flags().IntVar(&uid, "exclude-uid", -1, "the sidecar's uid: its connections are not redirected (required)")
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the rules instead")
	return cmd
}
