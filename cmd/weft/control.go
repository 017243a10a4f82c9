package main

import (
	"context"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/broker"
	"github.com/weftmesh/weft/telemetry/aggregator"
	"github.com/weftmesh/weft/telemetry/tracestore"
)

func newControlCmd(g *globalFlags) *cobra.Command {
	cfg := control.Config{}
	var kf kubeFlags
	cmd := &cobra.Command{
		Use:   "control",
		Short: "Run the control plane (registry, resources, push to sidecars)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			cfg.Logger = log.With("component", "control")
			if cfg.NATS.User != "" && cfg.NATS.Password == "" {
				cfg.NATS.Password = os.Getenv("WEFT_NATS_PASSWORD")
			}
			if !cmd.Flags().Changed("broker-addr") {
				cfg.BrokerAddr = "" // the default port, or any free one if it is taken
			}
			s, err := control.New(cfg)
			if err != nil {
				return controlPortHint(err)
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			waitKube, err := kf.start(ctx, s, cfg.Logger)
			if err != nil {
				return err
			}
			defer waitKube()
			defer cancel()
			return s.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", control.DefaultGRPCAddr, "address sidecars connect to (gRPC)")
	f.StringVar(&cfg.HTTPAddr, "http-addr", control.DefaultHTTPAddr, "address of the JSON API")
	f.StringVar(&cfg.DataDir, "data-dir", control.DefaultDataDir, "directory where applied resources persist")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", control.DefaultLeaseTTL, "an instance whose sidecar is silent this long is removed")
	f.DurationVar(&cfg.SyncGrace, "sync-grace", control.DefaultSyncGrace, "after start, how long a subscription to a service with no instances waits for one to re-register")
	f.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "span export target handed to sidecars without their own --otlp-endpoint: http://HOST:PORT[/PATH] or grpc://HOST:PORT, none for no tracing (default: this control plane's receiver, POST /v1/traces)")
	f.DurationVar(&cfg.ScrapeInterval, "scrape-interval", aggregator.DefaultInterval, "how often every sidecar's /metrics is scraped for weft stat and weft top")
	f.IntVar(&cfg.MaxTraces, "max-traces", tracestore.DefaultMaxTraces, "most recent traces kept in memory for weft traces")
	f.StringVar(&cfg.Broker, "broker", "", "message broker handed to sidecars: nats://HOST:PORT[,nats://…] for an external NATS cluster with JetStream, off for no messaging (default: the embedded broker)")
	f.StringVar(&cfg.BrokerAddr, "broker-addr", broker.DefaultAddr, "where the embedded broker listens (NATS protocol; its store is DATA-DIR/broker); when not given and the default port is taken, any free port (sidecars learn it from the control plane)")
	f.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", messaging.DefaultMaxMessageBytes, "largest message payload a publish may carry")
	kf.register(f)
	addControlSecurityFlags(f, &cfg.Security)
	addNATSFlags(f, &cfg.NATS)
	return cmd
}
