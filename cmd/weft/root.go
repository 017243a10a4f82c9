package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/version"
)

type globalFlags struct {
	logLevel  string
	logFormat string
}

func newRoot() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "weft",
		Short: "Weft: a service mesh in one binary",
		Long: `Weft is a service mesh: every app instance runs beside a sidecar that does
its service discovery, load balancing, retries and telemetry, and a control
plane pushes every change to the sidecars.

  weft demo                      run a whole mesh on this machine
  weft control                   run the control plane
  weft run --service S -- CMD    run an app and its sidecar as one unit
  weft apply -f policy.yaml      change how services are called`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Every command, even one that never logs, refuses a bad global flag.
		PersistentPreRunE: func(*cobra.Command, []string) error {
			_, err := g.logger()
			return err
		},
	}
	// --version is weft's own flag rather than cobra's (root.Version):
	// cobra prints a version line other than its default only through
	// text/template, whose reflection keeps every exported method of every
	// type in the binary: 4 MB of the image's 30 MB budget (#12).
	var showVersion bool
	root.Flags().BoolVarP(&showVersion, "version", "v", false, "version for weft")
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if showVersion {
			fmt.Fprintln(cmd.OutOrStdout(), version.Get())
			return nil
		}
		return cmd.Help()
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	addTokenFlag(root)
	root.AddCommand(
		newControlCmd(g),
		newSidecarCmd(g),
		newRunCmd(g),
		newApplyCmd(),
		newDeleteCmd(),
		newGetCmd(),
		newDemoCmd(g),
		newDemoAppCmd(),
		newStatCmd(), newTopCmd(), newTracesCmd(), newTraceCmd(),
		newTopicsCmd(), newPublishCmd(), newDLQCmd(),
		newCaptureCmd(),
		newDashboardCmd(),
		newVersionCmd(), newCheckCmd(), newProxyConfigCmd(),
		newInjectCmd(),
		newTokenCmd(), newIdentityCmd(),
		newExplainCmd(),
	)
	registerCompletions(root)
	return root
}

// logger builds the process logger; each package adds its own component key.
func (g *globalFlags) logger() (*slog.Logger, error) {
	var lvl slog.Level
	switch strings.ToLower(g.logLevel) {
	case "debug", "info", "warn", "error":
		_ = lvl.UnmarshalText([]byte(g.logLevel))
	default:
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch strings.ToLower(g.logFormat) {
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
	}
	return slog.New(h), nil
}
