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
		Long: `Run starts the sidecar, then the app with these in its environment:

  PORT                     the port the app must listen on (127.0.0.1), --app-port or a free one
  HTTP_PROXY, http_proxy   http://OUTBOUND: HTTP clients send their calls through the sidecar
  NO_PROXY, no_proxy       localhost,127.0.0.1,::1 (unless already set)
  WEFT_OUTBOUND            the sidecar's outbound address (host:port)
  WEFT_PUBLISH_URL         http://OUTBOUND/v1/publish: POST $WEFT_PUBLISH_URL/TOPIC to publish
  WEFT_ADMIN               the sidecar's admin address (/ready, /config, /metrics)
  WEFT_SERVICE, WEFT_INSTANCE_ID

The instance is registered once the app accepts connections on its port; an
app that has not after a few seconds is warned about (it keeps waiting). On
SIGTERM or Ctrl-C the instance is deregistered and drained (--drain) before
the app is stopped; when the app exits on its own, weft run deregisters and
exits with the app's exit code. A second instance on one host needs its own
--outbound and --admin: 127.0.0.1:0 takes any free port.`,
		Example: `  weft run --service orders --app-port 8080 -- ./orders-server
  weft run --service web -- python3 examples/python/app.py          # reads PORT
  weft run --service web --app-port 8000 -- python3 -m http.server 8000
  weft run --service web --outbound 127.0.0.1:0 --admin 127.0.0.1:0 -- python3 examples/python/app.py   # a second instance`,
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
			return sidecarPortHint(runner.Run(cmd.Context(), rc))
		},
	}
	f := cmd.Flags()
	sf.add(f, sidecar.DefaultOutbound)
	f.Lookup("app-port").Usage = "the port the app listens on, on 127.0.0.1 (default: a free one, passed to the app in PORT)"
	f.DurationVar(&rc.StopTimeout, "stop-timeout", 10e9, "after the drain, how long the app has to exit on SIGTERM before it is killed")
	f.SetInterspersed(false)
	return cmd
}
