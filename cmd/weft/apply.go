package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

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

func newGetCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:       "get services|resources|certs",
		Short:     "Show services and their instances, applied resources, or issued workload certificates",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"services", "resources", "certs"},
	}
	server := serverFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json (resources also: yaml)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := apiclient.New(*server)
		if err != nil {
			return err
		}
		if output != "table" && output != "json" && output != "yaml" {
			return fmt.Errorf("-o %q: want table, json or yaml", output)
		}
		out := cmd.OutOrStdout()
		switch args[0] {
		case "services", "service", "svc":
			return getServices(cmd.Context(), c, output, out)
		case "resources", "resource":
			return getResources(cmd.Context(), c, output, out)
		case "certs", "cert", "certificates":
			return getCerts(cmd.Context(), c, output, out)
		}
		return fmt.Errorf("unknown object %q: want services, resources or certs", args[0])
	}
	return cmd
}

func getServices(ctx context.Context, c *apiclient.Client, output string, out io.Writer) error {
	res, err := c.Services(ctx)
	if err != nil {
		return err
	}
	if output != "table" {
		return printJSON(out, res)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tINSTANCE\tADDRESS\tREADY\tVERSION\tLABELS")
	for _, s := range res.Services {
		if len(s.Instances) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\n", s.Name)
		}
		for _, in := range s.Instances {
			var labels []string
			for k, v := range in.Labels {
				labels = append(labels, k+"="+v)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\n", s.Name, in.ID, in.Address, in.Ready, dash(in.Version), dash(strings.Join(labels, ",")))
		}
	}
	return tw.Flush()
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

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
