package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/kube/inject"
	"github.com/weftmesh/weft/kube/tokenreview"
)

// maxInjectBytes bounds the manifest weft inject reads.
const maxInjectBytes = 8 << 20

func newInjectCmd() *cobra.Command {
	var file string
	var c inject.Config
	cmd := &cobra.Command{
		Use:   "inject -f MANIFEST",
		Short: "Add the Weft sidecar to the pods of a Kubernetes manifest (manual injection)",
		Long: `Adds Weft's sidecar, as a native sidecar (an init container with
restartPolicy: Always), to every Pod and pod template (Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) of a manifest and writes
the result to standard output: the same mutation the control plane's
injector webhook makes.

  weft inject -f deploy.yaml --sidecar-image weft:0.1.0 | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE is required (- for standard input)")
			}
			var data []byte
			var err error
			if file == "-" {
				data, err = io.ReadAll(io.LimitReader(os.Stdin, maxInjectBytes+1))
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("reading %s: %w", file, err)
			}
			if len(data) > maxInjectBytes {
				return fmt.Errorf("%s is larger than %d bytes", file, maxInjectBytes)
			}
			out, err := inject.Manifest(c, data)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "filename", "f", "", "manifest to inject (- for standard input)")
	f.StringVar(&c.Image, "sidecar-image", "weft:latest", "the weft image the sidecar runs")
	f.StringVar(&c.Control, "sidecar-control", "weft-control.weft-system.svc:15010", "the control plane's gRPC address as pods reach it")
	f.StringVar(&c.ImagePullPolicy, "sidecar-image-pull-policy", "IfNotPresent", "imagePullPolicy of the sidecar")
	f.StringVar(&c.TokenAudience, "token-audience", tokenreview.DefaultAudience, "audience of the sidecar's projected ServiceAccount token (as the control plane's --token-audience)")
	return cmd
}
