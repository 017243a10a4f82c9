package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/messaging/admin"
	"github.com/weftmesh/weft/messaging/broker"
	"github.com/weftmesh/weft/sidecar"
	"github.com/weftmesh/weft/version"
)

// checkResult is one line of `weft check`.
type checkResult struct {
	Name   string `json:"check"`
	Status string `json:"status"` // ok, warn, fail
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

func newCheckCmd() *cobra.Command {
	var dataDir, output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Pre-flight: is this machine and this mesh ready? One line per check, with a fix",
		Long: `check looks at the machine (loopback, file descriptors, the default ports,
the data directory) and at the mesh behind --server (the control plane, its
broker, the sidecars' versions against the control plane's), and prints one
line per check with what to do when it is not right. It exits 1 when a check
fails (a warning does not).`,
		Args: cobra.NoArgs,
	}
	server := serverFlag(cmd)
	cmd.Flags().StringVar(&dataDir, "data-dir", control.DefaultDataDir, "the control plane's data directory to check")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if output != "table" && output != "json" {
			return fmt.Errorf("-o %q: want table or json", output)
		}
		res := runChecks(cmd.Context(), *server, dataDir)
		if output == "json" {
			if err := printJSON(cmd.OutOrStdout(), res); err != nil {
				return err
			}
		} else {
			printChecks(cmd.OutOrStdout(), res)
		}
		for _, r := range res {
			if r.Status == "fail" {
				return fmt.Errorf("%s: %s", r.Name, r.Detail)
			}
		}
		return nil
	}
	return cmd
}

func printChecks(out io.Writer, res []checkResult) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, r := range res {
		line := fmt.Sprintf("%s\t%s\t%s", strings.ToUpper(r.Status), r.Name, r.Detail)
		if r.Fix != "" {
			line += "\t→ " + r.Fix
		}
		fmt.Fprintln(tw, line)
	}
	_ = tw.Flush()
}

func runChecks(ctx context.Context, server, dataDir string) []checkResult {
	var res []checkResult
	add := func(name, status, detail, fix string) {
		res = append(res, checkResult{Name: name, Status: status, Detail: detail, Fix: fix})
	}
	mine := version.Get()
	add("weft", "ok", mine.String(), "")

	// The machine.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err != nil {
		add("loopback", "fail", "cannot listen on 127.0.0.1: "+err.Error(), "bring up the loopback interface (ip link set lo up)")
	} else {
		ln.Close()
		add("loopback", "ok", "127.0.0.1 accepts listeners", "")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		if lim.Cur < 4096 {
			add("file descriptors", "warn", fmt.Sprintf("limit %d open files; each proxied connection takes two", lim.Cur), "raise it: ulimit -n 65536")
		} else {
			add("file descriptors", "ok", fmt.Sprintf("limit %d open files", lim.Cur), "")
		}
	}

	// The control plane.
	c, err := apiclient.New(server)
	if err != nil {
		add("control plane", "fail", err.Error(), "pass --server http://HOST:PORT (or set WEFT_SERVER)")
		return res
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var cv version.Info
	cpErr := getJSON(cctx, server, "/api/v1/version", &cv)
	if cpErr != nil {
		add("control plane", "fail", fmt.Sprintf("%s does not answer: %v", server, cpErr), "start it: weft control & (or pass --server / set WEFT_SERVER)")
	} else {
		add("control plane", "ok", fmt.Sprintf("%s answers, weft %s (commit %s)", server, cv.Version, cv.Commit), "")
		if cv.Version != mine.Version {
			add("cli vs control plane", "warn", fmt.Sprintf("this weft is %s, the control plane %s", mine.Version, cv.Version), "use one build for both (make build)")
		}
	}

	// The default ports: free, or held by the control plane we just reached.
	ports := []struct{ flag, addr, owner string }{
		{"weft control --http-addr", control.DefaultHTTPAddr, "control"},
		{"weft control --grpc-addr", control.DefaultGRPCAddr, "control"},
		{"weft control --broker-addr", broker.DefaultAddr, "control"},
		{"weft run --outbound", sidecar.DefaultOutbound, "sidecar"},
		{"weft run --admin", sidecar.DefaultAdmin, "sidecar"},
	}
	for _, p := range ports {
		ln, err := net.Listen("tcp", p.addr)
		switch {
		case err == nil:
			ln.Close()
			add("port "+p.addr, "ok", "free ("+p.flag+")", "")
		case p.owner == "control" && cpErr == nil:
			add("port "+p.addr, "ok", "in use, by the running control plane presumably ("+p.flag+")", "")
		case p.owner == "control":
			add("port "+p.addr, "fail", "in use by another program and no control plane answers ("+p.flag+")", "find it: ss -ltnp 'sport = :"+portOf(p.addr)+"', or pass "+p.flag+" 127.0.0.1:0")
		default:
			add("port "+p.addr, "warn", "in use, by a sidecar already running here? ("+p.flag+")", "start further instances with --outbound 127.0.0.1:0 --admin 127.0.0.1:0")
		}
	}

	// The store: the data directory must be writable (or creatable).
	add(storeCheck(dataDir))

	if cpErr != nil {
		return res
	}
	// The broker, as the control plane sees it.
	api, _ := newMsgAPI(server)
	var topics admin.TopicsJSON
	switch err := api.do(cctx, http.MethodGet, "/api/v1/topics", nil, nil, &topics); {
	case err != nil && strings.Contains(err.Error(), "off"):
		add("broker", "ok", "messaging is off (weft control --broker off)", "")
	case err != nil:
		add("broker", "fail", err.Error(), "see the control plane's log; --broker nats://… for an external one")
	case !topics.Connected:
		add("broker", "fail", "the control plane is not connected to "+topics.Broker, "check that the broker runs and is reachable from the control plane")
	default:
		add("broker", "ok", fmt.Sprintf("%s connected, %d topics", topics.Broker, len(topics.Topics)), "")
	}

	// The sidecars' versions against the control plane's.
	svcs, err := c.Services(cctx)
	if err != nil {
		add("sidecars", "fail", err.Error(), "")
		return res
	}
	n, older := 0, map[string][]string{}
	for _, s := range svcs.Services {
		for _, in := range s.Instances {
			n++
			if in.WeftVersion != cv.Version {
				v := in.WeftVersion
				if v == "" {
					v = "unknown (older than weft check)"
				}
				older[v] = append(older[v], in.ID)
			}
		}
	}
	switch {
	case n == 0:
		add("sidecars", "ok", "none registered yet", "")
	case len(older) == 0:
		add("sidecars", "ok", fmt.Sprintf("%d registered, all weft %s like the control plane", n, cv.Version), "")
	default:
		var parts []string
		for v, ids := range older {
			sort.Strings(ids)
			parts = append(parts, fmt.Sprintf("%s: %s", v, strings.Join(ids, ", ")))
		}
		sort.Strings(parts)
		add("sidecars", "warn", fmt.Sprintf("%d registered; not at the control plane's %s: %s", n, cv.Version, strings.Join(parts, "; ")), "restart them with the same build")
	}
	return res
}

func storeCheck(dir string) (name, status, detail, fix string) {
	name = "store " + dir
	abs, _ := filepath.Abs(dir)
	st, err := os.Stat(dir)
	switch {
	case os.IsNotExist(err):
		parent := filepath.Dir(abs)
		if f, err := os.CreateTemp(parent, ".weft-check-"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return name, "ok", "not there yet; weft control will create it", ""
		}
		return name, "fail", "not there and " + parent + " is not writable", "pass weft control --data-dir DIR somewhere writable"
	case err != nil:
		return name, "fail", err.Error(), "pass weft control --data-dir DIR"
	case !st.IsDir():
		return name, "fail", "not a directory", "pass weft control --data-dir DIR"
	}
	f, err := os.CreateTemp(dir, ".weft-check-")
	if err != nil {
		return name, "fail", "not writable: " + err.Error(), "fix its permissions or pass weft control --data-dir DIR"
	}
	f.Close()
	os.Remove(f.Name())
	return name, "ok", "writable", ""
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
