package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/resource"
)

func serverFlag(cmd *cobra.Command) *string {
	def := os.Getenv("WEFT_SERVER")
	if def == "" {
		def = apiclient.DefaultServer
	}
	return cmd.Flags().String("server", def, "control plane URL (env WEFT_SERVER)")
}

// readManifest reads and validates a manifest file ("-" for stdin) locally,
// so bad input is refused before the control plane is contacted.
func readManifest(file string) ([]byte, []resource.Object, error) {
	if file == "" {
		return nil, nil, fmt.Errorf("-f FILE is required (- for standard input)")
	}
	var data []byte
	var err error
	if file == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, resource.MaxManifestBytes+1))
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", file, err)
	}
	objs, err := resource.Decode(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", file, err)
	}
	return data, objs, nil
}

func newApplyCmd() *cobra.Command {
	return manifestCmd("apply", "Create or update resources from a YAML manifest (all or nothing)",
		"  weft apply -f orders-policy.yaml", (*apiclient.Client).Apply)
}

func newDeleteCmd() *cobra.Command {
	return manifestCmd("delete", "Delete the resources a manifest names (all or nothing)",
		"  weft delete -f orders-policy.yaml", (*apiclient.Client).Delete)
}

// manifestCmd builds a command that validates a manifest locally, then sends
// it whole to the control plane and prints one line per object.
func manifestCmd(verb, short, example string, send func(*apiclient.Client, context.Context, []byte) (control.ApplyResultJSON, error)) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:     verb + " -f FILE",
		Short:   short,
		Example: example,
		Args:    cobra.NoArgs,
	}
	server := serverFlag(cmd)
	cmd.Flags().StringVarP(&file, "filename", "f", "", "manifest file, - for standard input")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		data, _, err := readManifest(file)
		if err != nil {
			return err
		}
		c, err := apiclient.New(*server)
		if err != nil {
			return err
		}
		res, err := send(c, cmd.Context(), data)
		if err != nil {
			return err
		}
		for _, r := range res.Results {
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s\n", strings.ToLower(r.Kind), r.Name, r.Result)
		}
		return nil
	}
	return cmd
}

// getKinds are what `weft get` shows; the first name of each is canonical.
var getKinds = [][]string{{"services", "service", "svc"}, {"resources", "resource"}, {"certs", "cert", "certificates"}, {"config", "proxy-config"}}

func newGetCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get services|resources|certs|config INSTANCE",
		Short: "Show services and their instances, applied resources, issued workload certificates, or what one sidecar holds",
		Example: `  weft get services
  weft get services -o wide          # also each sidecar's outbound and admin address
  weft get resources -o yaml
  weft get certs                     # each instance's SPIFFE ID, serial, expiry
  weft get config orders-7f3a9c      # one sidecar's destinations, endpoints, policies`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("get what? want one of: services, resources, certs, config INSTANCE")
			}
			switch canonicalGet(args[0]) {
			case "":
				return fmt.Errorf("unknown object %q: want one of: services, resources, certs, config INSTANCE", args[0])
			case "config":
				if len(args) != 2 {
					return errors.New("get config: want one instance id (see weft get services)")
				}
			default:
				if len(args) != 1 {
					return fmt.Errorf("get %s: no further arguments, got %q", args[0], args[1:])
				}
			}
			return nil
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			switch {
			case len(args) == 0:
				return []cobra.Completion{"services", "resources", "certs", "config"}, cobra.ShellCompDirectiveNoFileComp
			case len(args) == 1 && canonicalGet(args[0]) == "config":
				return completeInstances(cmd)
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
	}
	server := serverFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, wide, json or yaml")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if output != "table" && output != "wide" && output != "json" && output != "yaml" {
			return fmt.Errorf("-o %q: want table, wide, json or yaml", output)
		}
		c, err := apiclient.New(*server)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		switch canonicalGet(args[0]) {
		case "services":
			return getServices(cmd.Context(), c, output, out)
		case "resources":
			return getResources(cmd.Context(), c, output, out)
		case "certs":
			return getCerts(cmd.Context(), c, output, out)
		default:
			return getConfig(cmd.Context(), c, args[1], output, out)
		}
	}
	return cmd
}

func canonicalGet(arg string) string {
	for _, k := range getKinds {
		if slices.Contains(k, strings.ToLower(arg)) {
			return k[0]
		}
	}
	return ""
}

func getServices(ctx context.Context, c *apiclient.Client, output string, out io.Writer) error {
	res, err := c.Services(ctx)
	if err != nil {
		return err
	}
	switch output {
	case "json":
		return printJSON(out, res)
	case "yaml":
		return printYAML(out, res)
	}
	wide := output == "wide"
	// EJECTED (reason and the callers that ejected it) shows only while
	// some caller's outlier detection has an instance out.
	anyEjected := false
	for _, s := range res.Services {
		for _, in := range s.Instances {
			anyEjected = anyEjected || len(in.Ejected) > 0
		}
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if wide {
		fmt.Fprint(tw, "SERVICE\tINSTANCE\tADDRESS\tREADY\tVERSION\tLABELS\tOUTBOUND\tADMIN\tWEFT")
	} else {
		fmt.Fprint(tw, "SERVICE\tINSTANCE\tADDRESS\tREADY\tVERSION\tLABELS")
	}
	if anyEjected {
		fmt.Fprint(tw, "\tEJECTED")
	}
	fmt.Fprintln(tw)
	for _, s := range res.Services {
		for _, in := range s.Instances {
			var labels []string
			for k, v := range in.Labels {
				labels = append(labels, k+"="+v)
			}
			slices.Sort(labels)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s", s.Name, in.ID, in.Address, in.Ready, dash(in.Version), dash(strings.Join(labels, ",")))
			if wide {
				fmt.Fprintf(tw, "\t%s\t%s\t%s", dash(in.Outbound), dash(in.Admin), dash(in.WeftVersion))
			}
			if anyEjected {
				fmt.Fprintf(tw, "\t%s", dash(ejectedBy(in.Ejected)))
			}
			fmt.Fprintln(tw)
		}
	}
	return tw.Flush()
}

// ejectedBy says why and by whom an instance is ejected:
// "consecutive_5xx(by:web-1,web-2)", one group per reason.
func ejectedBy(ej []control.EjectedByJSON) string {
	var reasons []string
	by := map[string][]string{}
	for _, e := range ej {
		if by[e.Reason] == nil {
			reasons = append(reasons, e.Reason)
		}
		by[e.Reason] = append(by[e.Reason], e.CallerInstance)
	}
	slices.Sort(reasons)
	parts := make([]string, len(reasons))
	for i, r := range reasons {
		callers := by[r]
		slices.Sort(callers)
		parts[i] = r + "(by:" + strings.Join(slices.Compact(callers), ",") + ")"
	}
	return strings.Join(parts, ",")
}

func getResources(ctx context.Context, c *apiclient.Client, output string, out io.Writer) error {
	res, err := c.Resources(ctx)
	if err != nil {
		return err
	}
	switch output {
	case "json":
		return printJSON(out, res)
	case "yaml":
		y, err := resource.Marshal(res.Items)
		if err != nil {
			return err
		}
		_, err = out.Write(y)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tTARGET\tGENERATION")
	for _, o := range res.Items {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", o.Kind, o.Metadata.Name, dash(o.Target()), o.Metadata.Generation)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printYAML prints v as YAML, by way of its JSON form (so field names are
// the JSON API's).
func printYAML(out io.Writer, v any) error {
	y, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = out.Write(y)
	return err
}

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
