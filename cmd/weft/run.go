package main

import (
	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/runner"
	"github.com/weftmesh/weft/sidecar"
)

func newRunCmd(g *globalFlags) *cobra.Command {
	sf := &sidecarFlags{}
	rc := runner.Config{}
	cmd := &cobra.Command{
		Use:   "run [sidecar flags] -- CMD ARGS...",
		Short: "Run an app and its sidecar as one unit",
		Long: `Run starts the sidecar, then the app with PORT, HTTP_PROXY, http_proxy,
WEFT_OUTBOUND, WEFT_SERVICE and WEFT_INSTANCE_ID in its environment. The
instance is registered once the app accepts connections on its port. On
SIGTERM or Ctrl-C the instance is deregistered and drained (--drain) before
the app is stopped; when the app exits on its own, weft run deregisters and
exits with the app's exit code.`,
		Example: `  weft run --service orders --app-port 8080 -- ./orders-server
  weft run --service web -- python3 -m http.server    # PORT is chosen and passed in`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := sf.config()
			if err != nil {
				return err
			}
			if cfg.Capture.Enabled {
				return errCaptureRun
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg.Logger = log.With("service", cfg.Service)
			rc.Sidecar = cfg
			rc.Command = args
			rc.Logger = cfg.Logger
			return runner.Run(cmd.Context(), rc)
		},
	}
	f := cmd.Flags()
	sf.add(f, sidecar.DefaultOutbound)
	f.DurationVar(&rc.StopTimeout, "stop-timeout", 10e9, "after the drain, how long the app has to exit on SIGTERM before it is killed")
	f.SetInterspersed(false)
	return cmd
}
