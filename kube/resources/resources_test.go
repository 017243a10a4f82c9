package resources

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/kube/client"
)

func TestConvert(t *testing.T) {
	js, err := yaml.YAMLToJSON([]byte(`apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: orders, namespace: shop, generation: 3, labels: {team: a}}
spec: {service: orders, timeout: 2s}
status: {conditions: []}
`))
	if err != nil {
		t.Fatal(err)
	}
	// Decoded as the client decodes: integers are int64.
	var u client.Object
	if err := client.Decode(js, &u); err != nil {
		t.Fatal(err)
	}
	m := u
	o, err := Convert(u)
	if err != nil {
		t.Fatal(err)
	}
	if o.Metadata.Namespace != "" || o.Metadata.Name != "orders" || o.Metadata.Generation != 3 || o.Metadata.Labels["team"] != "a" {
		t.Errorf("metadata %+v: want the name, labels and generation, no namespace", o.Metadata)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("the converted object does not validate: %v", err)
	}
	if string(o.Spec) != `{"service":"orders","timeout":"2s"}` {
		t.Errorf("spec %s", o.Spec)
	}
	delete(m, "spec")
	if _, err := Convert(m); err == nil || !strings.Contains(err.Error(), "spec is missing") {
		t.Errorf("without spec: err %v", err)
	}
}
