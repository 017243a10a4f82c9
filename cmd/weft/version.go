package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/version"
)

func newVersionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print weft's version, commit, Go version and build date",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in := version.Get()
			switch output {
			case "", "text":
				fmt.Fprintln(cmd.OutOrStdout(), in)
				return nil
			case "json":
				return printJSON(cmd.OutOrStdout(), in)
			}
			return fmt.Errorf("-o %q: want text or json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
