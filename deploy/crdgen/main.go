// Command crdgen writes a CustomResourceDefinition for every Weft resource
// kind to deploy/kubernetes/crds and the Helm chart's crds/ (run from the module root:
// `go run ./deploy/crdgen`). kube/crd's test fails when the committed files
// differ from what it would write.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/weftmesh/weft/kube/crd"
)

func main() {
	out := flag.String("out", "deploy/kubernetes/crds,deploy/helm/weft/crds", "comma-separated directories the CRDs are written to")
	src := flag.String("resource-src", "resource", "the resource package's source, for field descriptions")
	flag.Parse()
	if err := run(*out, *src); err != nil {
		fmt.Fprintln(os.Stderr, "crdgen:", err)
		os.Exit(1)
	}
}

func run(out, src string) error {
	docs, err := crd.ParseDocs(src)
	if err != nil {
		return fmt.Errorf("reading field docs: %w", err)
	}
	files, err := crd.All(docs)
	if err != nil {
		return err
	}
	for _, dir := range strings.Split(out, ",") {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
