package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/sidecar"
)

func newProxyConfigCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "proxy-config INSTANCE",
		Short: "Show what one sidecar holds now: destinations, endpoints with state, policies, control-plane version",
		Long: `proxy-config (the same as weft get config) finds the instance's admin
address in the registry and asks that sidecar for its view: every
destination it has looked up, each one's endpoints and whether it sends them
traffic, the policy and other objects applied to it, and which control plane
(id, version) it is connected to.`,
		Example: "  weft proxy-config orders-7f3a9c\n  weft proxy-config orders-7f3a9c -o json",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("proxy-config: want one instance id (see weft get services), got %d arguments", len(args))
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return completeInstances(cmd)
		},
	}
	server := serverFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if output != "table" && output != "json" && output != "yaml" {
			return fmt.Errorf("-o %q: want table, json or yaml", output)
		}
		c, err := apiclient.New(*server)
		if err != nil {
			return err
		}
		return getConfig(cmd.Context(), c, args[0], output, cmd.OutOrStdout())
	}
	return cmd
}

// getConfig prints one sidecar's /config, found through the registry.
func getConfig(ctx context.Context, c *apiclient.Client, id, output string, out io.Writer) error {
	if output == "wide" {
		output = "table"
	}
	res, err := c.Services(ctx)
	if err != nil {
		return err
	}
	var admin string
	var known []string
	found := false
	for _, s := range res.Services {
		for _, in := range s.Instances {
			known = append(known, in.ID)
			if in.ID == id {
				admin, found = in.Admin, true
			}
		}
	}
	switch {
	case !found && len(known) == 0:
		return fmt.Errorf("instance %q not found: no instance is registered", id)
	case !found:
		slices.Sort(known)
		return fmt.Errorf("instance %q not found; registered: %s", id, strings.Join(known, ", "))
	case admin == "":
		return fmt.Errorf("instance %q has no admin listener (its sidecar runs with --admin \"\"), so its view cannot be read", id)
	}
	view, raw, err := fetchConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("instance %q: %w", id, err)
	}
	switch output {
	case "json":
		_, err = out.Write(raw)
		return err
	case "yaml":
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		return printYAML(out, v)
	}
	printConfig(out, view)
	return nil
}

func fetchConfig(ctx context.Context, admin string) (sidecar.ConfigView, []byte, error) {
	var v sidecar.ConfigView
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/config", nil)
	if err != nil {
		return v, nil, fmt.Errorf("admin address %q: %w", admin, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return v, nil, fmt.Errorf("sidecar admin at %s unreachable: %w", admin, unwrapURL(err))
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return v, nil, fmt.Errorf("reading %s/config: %w", admin, err)
	}
	if resp.StatusCode != http.StatusOK {
		return v, nil, fmt.Errorf("sidecar admin at %s answered %s", admin, resp.Status)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, nil, fmt.Errorf("unreadable answer from %s/config: %w", admin, err)
	}
	return v, raw, nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func printConfig(out io.Writer, v sidecar.ConfigView) {
	conn := "not connected"
	if v.Control.Connected {
		conn = "connected"
	}
	fmt.Fprintf(out, "INSTANCE   %s (service %s, weft %s)\n", v.ID, v.Service, dash(v.WeftVersion))
	fmt.Fprintf(out, "CONTROL    %s %s, control plane %s version %s, %d updates received\n",
		v.Control.Address, conn, dash(v.Control.ID), dash(v.Control.Version), v.Control.Updates)
	var ls []string
	for _, k := range slices.Sorted(maps.Keys(v.Listeners)) {
		if v.Listeners[k] != "" {
			ls = append(ls, k+" "+v.Listeners[k])
		}
	}
	fmt.Fprintf(out, "LISTENERS  %s\n\n", strings.Join(ls, ", "))
	if len(v.Destinations) == 0 {
		fmt.Fprintln(out, "no destinations yet (a sidecar subscribes to a service when its app first calls it)")
		return
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tVERSION\tALGORITHM\tTIMEOUT\tREADY\tCONFIG")
	for _, d := range v.Destinations {
		ready := 0
		for _, e := range d.Endpoints {
			if e.State == "ready" {
				ready++
			}
		}
		var cfg []string
		for _, o := range d.Config {
			cfg = append(cfg, fmt.Sprintf("%s/%s (generation %d)", strings.ToLower(o.Kind), o.Name, o.Generation))
		}
		name := d.Service
		if !d.Exists {
			name += " (unknown)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d/%d\t%s\n", name, d.Version, dash(d.Algorithm), d.Timeout, ready, len(d.Endpoints), dash(strings.Join(cfg, ", ")))
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tENDPOINT\tADDRESS\tSTATE\tIN-FLIGHT")
	for _, d := range v.Destinations {
		if len(d.Endpoints) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\tno instances\t-\n", d.Service)
		}
		for _, e := range d.Endpoints {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", d.Service, e.ID, e.Address, e.State, e.InFlight)
		}
	}
	_ = tw.Flush()
}
