package crd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/resource"
)

// committed are the folders deploy/crdgen writes.
var committed = []string{"../../deploy/kubernetes/crds", "../../deploy/helm/weft/crds"}

// The committed CRDs are what the generator writes from today's types: a
// spec field added without `go run ./deploy/crdgen` fails here.
func TestCommittedCRDsUpToDate(t *testing.T) {
	docs, err := ParseDocs("../../resource")
	if err != nil {
		t.Fatal(err)
	}
	want, err := All(docs)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range committed {
		for name, b := range want {
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Errorf("%s: %v (run `go run ./deploy/crdgen`)", name, err)
				continue
			}
			if string(got) != string(b) {
				t.Errorf("%s/%s is out of date: run `go run ./deploy/crdgen`", dir, name)
			}
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, f := range files {
			if _, ok := want[filepath.Base(f)]; !ok {
				t.Errorf("%s is no kind's CRD any more: delete it", f)
			}
		}
	}
}

// Every registered kind can become a CRD; a kind added without Spec is
// named here.
func TestEveryKindHasSpec(t *testing.T) {
	for _, name := range resource.KindNames() {
		k, _ := resource.LookupKind(name)
		if k.Spec == nil {
			t.Errorf("kind %s has no Spec func in its resource.Kind: set Spec: func() any { return %sSpec{} }", name, name)
		}
	}
}

func TestGenerateWithoutSpecNamesTheKind(t *testing.T) {
	_, err := Generate(resource.Kind{Name: "Route"}, nil)
	if err == nil || !strings.Contains(err.Error(), "kind Route has no Spec") {
		t.Fatalf("err = %v, want one naming kind Route", err)
	}
}

func TestPlural(t *testing.T) {
	for kind, want := range map[string]string{
		"TrafficPolicy":       "trafficpolicies",
		"Subscription":        "subscriptions",
		"Route":               "routes",
		"AuthorizationPolicy": "authorizationpolicies",
		"Gateway":             "gateways",
		"Mesh":                "meshes",
		"Address":             "addresses",
	} {
		if got := Plural(kind); got != want {
			t.Errorf("Plural(%s) = %s, want %s", kind, got, want)
		}
	}
}

type inner struct {
	N int64 `json:"n"`
}

type sample struct {
	Name    string            `json:"name"`
	Opt     *inner            `json:"opt,omitempty"`
	List    []inner           `json:"list,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Weight  float64           `json:"weight,omitempty"`
	On      bool              `json:"on,omitempty"`
	Raw     json.RawMessage   `json:"raw,omitempty"`
	Skipped string            `json:"-"`
	hidden  string
}

func TestSchema(t *testing.T) {
	got, err := Schema(sample{}, Docs{"sample.Name": "the name"})
	if err != nil {
		t.Fatal(err)
	}
	props := got["properties"].(map[string]any)
	want := map[string]any{
		"name":   map[string]any{"type": "string", "description": "the name"},
		"opt":    map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer", "format": "int64"}}, "required": []string{"n"}},
		"labels": map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "string"}},
		"weight": map[string]any{"type": "number"},
		"on":     map[string]any{"type": "boolean"},
		"raw":    map[string]any{"x-kubernetes-preserve-unknown-fields": true},
	}
	for k, w := range want {
		if !reflect.DeepEqual(props[k], w) {
			t.Errorf("%s: got %#v, want %#v", k, props[k], w)
		}
	}
	if l := props["list"].(map[string]any); l["type"] != "array" || l["items"].(map[string]any)["type"] != "object" {
		t.Errorf("list: %#v", l)
	}
	for _, k := range []string{"Skipped", "-", "hidden"} {
		if _, ok := props[k]; ok {
			t.Errorf("%s should not be in the schema", k)
		}
	}
	if !slices.Equal(got["required"].([]string), []string{"name"}) {
		t.Errorf("required = %v, want [name]", got["required"])
	}
}

func TestSchemaRefusesWhatJSONCannotSay(t *testing.T) {
	type rec struct {
		Next *rec `json:"next,omitempty"`
	}
	type badMap struct {
		M map[int]string `json:"m"`
	}
	for _, v := range []any{rec{}, badMap{}, struct {
		C chan int `json:"c"`
	}{}} {
		if _, err := Schema(v, nil); err == nil {
			t.Errorf("Schema(%T) succeeded", v)
		}
	}
}
