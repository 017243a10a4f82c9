package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/dashboard"
)

func newDashboardCmd() *cobra.Command {
	var open bool
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Print the URL of the control plane's web dashboard (--open: open it in a browser)",
		Long: `dashboard checks that the control plane answers and prints the URL of the
web dashboard it serves on its HTTP port: services with their golden metrics
and plots, the topology, traces, topics and applied resources. The URL
holds a one-time login code (good for a minute) made with the API token
this command finds (--token, $WEFT_TOKEN or the local token file):
opening it gives the browser a session cookie for that token. With --open
it also starts a browser ($BROWSER, else the desktop's opener: xdg-open,
open or start) where one exists.`,
		Example: `  weft dashboard
  weft dashboard --open --server http://10.0.0.5:15000`,
		Args: cobra.NoArgs,
	}
	server := serverFlag(cmd)
	cmd.Flags().BoolVar(&open, "open", false, "also open the dashboard in a browser")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		u, err := dashboardURL(*server)
		if err != nil {
			return err
		}
		if err := checkDashboard(cmd.Context(), u); err != nil {
			return err
		}
		// A one-time login for the browser, with the token this CLI finds
		// (the page asks for a token itself when there is none).
		if c, err := apiclient.New(strings.TrimSuffix(u, dashboard.Prefix)); err == nil {
			if login, err := c.DashboardLogin(cmd.Context()); err == nil {
				u = login
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "no login link (%v); the page will ask for an API token\n", err)
			}
		}
		fmt.Fprintln(cmd.OutOrStdout(), u)
		if open {
			if err := openBrowser(u); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "not opened: %v; open the URL above yourself\n", err)
			}
		}
		return nil
	}
	return cmd
}

func dashboardURL(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--server %q: want a URL such as http://127.0.0.1:15000", server)
	}
	return strings.TrimSuffix(u.Scheme+"://"+u.Host+u.Path, "/") + dashboard.Prefix, nil
}

// checkDashboard fetches the dashboard's page, so a wrong --server or a
// control plane that is not running is said here, not in the browser.
func checkDashboard(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := apiclient.HTTPClient(u, 0).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("%w (start one with weft control, or pass --server)", apiclient.RequestError(strings.TrimSuffix(u, dashboard.Prefix), err))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s (is this a weft control plane with the dashboard?)", u, resp.Status)
	}
	return nil
}

// openBrowser starts a browser on u without waiting for it.
func openBrowser(u string) error {
	var name string
	var args []string
	if b := os.Getenv("BROWSER"); b != "" {
		f := strings.Fields(b)
		name, args = f[0], f[1:]
	} else {
		switch runtime.GOOS {
		case "darwin":
			name = "open"
		case "windows":
			name, args = "cmd", []string{"/c", "start", ""}
		default:
			name = "xdg-open"
		}
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("no browser found (%s: %w; set $BROWSER)", name, err)
	}
	c := exec.Command(path, append(args, u)...)
	if err := c.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	return c.Process.Release()
}
