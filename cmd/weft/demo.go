package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/demo"
)

func newDemoCmd(g *globalFlags) *cobra.Command {
	cfg := demo.Config{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole mesh on this machine: control plane, services, traffic",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the weft binary: %w", err)
			}
			cfg.Binary = bin
			if cfg.Logger, err = g.logger(); err != nil {
				return err
			}
			return demo.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.HTTPAddr, "http-addr", control.DefaultHTTPAddr, "control plane API address")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", control.DefaultGRPCAddr, "control plane gRPC address")
	f.StringVar(&cfg.DataDir, "data-dir", "", "where the demo keeps its store and logs (default: a temporary directory, removed at exit)")
	f.DurationVar(&cfg.Duration, "duration", 0, "run for this long, then stop and exit 0 (default: until Ctrl-C)")
	f.Float64Var(&cfg.Rate, "rate", 20, "requests per second the load generator sends")
	return cmd
}

func newDemoAppCmd() *cobra.Command {
	var role string
	var rate float64
	cmd := &cobra.Command{
		Use:    "demo-app",
		Short:  "One demo service's app (started by weft demo under weft run)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.RunApp(cmd.Context(), role, rate)
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "frontend, orders, inventory or loadgen")
	cmd.Flags().Float64Var(&rate, "rate", 20, "loadgen: requests per second")
	return cmd
}
