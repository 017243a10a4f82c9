// Package resource holds Weft's declarative resources (TrafficPolicy, …) in the
// kubectl shape — apiVersion, kind, metadata, spec — so that the files users
// apply with `weft apply` will work unchanged as Kubernetes custom resources.
// The CLI decodes and validates them before sending; the control plane decodes
// and validates them again before storing, and hands each spec to sidecars as
// JSON, so a spec's schema is defined here and nowhere else.
package resource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// APIVersion is the only API version this build understands.
const APIVersion = "weft.dev/v1alpha1"

// Limits on untrusted input: a manifest is parsed by the CLI and by the control
// plane's HTTP API, so both sides bound it.
const (
	MaxManifestBytes = 1 << 20 // 1 MiB
	MaxDocuments     = 500
	MaxNameLength    = 253
)

// Meta is the subset of Kubernetes ObjectMeta Weft uses.
type Meta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Generation is set by the control plane: it increases on every change.
	Generation int64 `json:"generation,omitempty"`
}

// Object is any resource as applied and stored. Spec stays raw JSON here; the
// kind's own type (e.g. TrafficPolicySpec) is decoded from it on demand.
type Object struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   Meta            `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// Ref names one object.
type Ref struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (r Ref) String() string { return r.Kind + "/" + r.Name }

// Ref returns the object's reference.
func (o *Object) Ref() Ref { return Ref{Kind: o.Kind, Name: o.Metadata.Name} }

// Kind describes one resource kind: how to validate its spec, and which
// service (if any) it configures, which is how the control plane finds the
// policy for a destination and refuses two objects fighting over one service.
type Kind struct {
	Name string
	// Validate decodes spec strictly and checks it.
	Validate func(spec json.RawMessage) error
	// Target returns the key the object claims (e.g. "service orders"); two
	// objects of one kind may not claim the same key. Empty: claims nothing.
	Target func(spec json.RawMessage) string
	// Service returns the service whose sidecars the object configures
	// ("" when none): the control plane pushes the object to them.
	Service func(spec json.RawMessage) string
	// Spec returns a zero value of the kind's spec type (e.g.
	// TrafficPolicySpec{}), from which the Kubernetes CRD's schema is
	// generated (deploy/crdgen). Every kind must set it: the generator and
	// its test fail naming a kind without it.
	Spec func() any
}

var kinds = map[string]Kind{}

// registerKind is called from init in each kind's file of this package.
func registerKind(k Kind) { kinds[k.Name] = k }

// KindNames lists the known kinds, sorted.
func KindNames() []string {
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LookupKind returns the named kind.
func LookupKind(name string) (Kind, error) {
	k, ok := kinds[name]
	if !ok {
		return Kind{}, fmt.Errorf("unknown kind %q (valid: %s)", name, strings.Join(KindNames(), ", "))
	}
	return k, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// ValidateName checks a DNS-1123 subdomain name, the rule Kubernetes applies
// to object names and Weft applies to service names (they are Host headers).
func ValidateName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("%q is longer than %d characters", name[:32]+"…", MaxNameLength)
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%q is not a valid name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)", name)
	}
	return nil
}

// Validate checks an object's envelope and its kind's spec.
func (o *Object) Validate() error {
	if o.APIVersion != APIVersion {
		if o.APIVersion == "" {
			return fmt.Errorf("apiVersion is missing (want %s)", APIVersion)
		}
		return fmt.Errorf("unsupported apiVersion %q (want %s)", o.APIVersion, APIVersion)
	}
	if o.Kind == "" {
		return fmt.Errorf("kind is missing (valid: %s)", strings.Join(KindNames(), ", "))
	}
	k, err := LookupKind(o.Kind)
	if err != nil {
		return err
	}
	if err := ValidateName(o.Metadata.Name); err != nil {
		return fmt.Errorf("metadata.name: %w", err)
	}
	if ns := o.Metadata.Namespace; ns != "" && ns != "default" {
		return fmt.Errorf("metadata.namespace: %q: only the default namespace exists yet", ns)
	}
	if len(bytes.TrimSpace(o.Spec)) == 0 || string(bytes.TrimSpace(o.Spec)) == "null" {
		return errors.New("spec is missing")
	}
	if err := k.Validate(o.Spec); err != nil {
		// A kind's errors start with the field path ("loadBalancer.algorithm:
		// …") or, for the spec itself (an unknown field), with ": ".
		if strings.HasPrefix(err.Error(), ":") {
			return fmt.Errorf("spec%w", err)
		}
		return fmt.Errorf("spec.%w", err)
	}
	return nil
}

// Target is the key the object claims, per its kind ("" when none).
func (o *Object) Target() string {
	k, ok := kinds[o.Kind]
	if !ok || k.Target == nil {
		return ""
	}
	return k.Target(o.Spec)
}

// Service is the service the object configures, per its kind ("" when none).
func (o *Object) Service() string {
	k, ok := kinds[o.Kind]
	if !ok || k.Service == nil {
		return ""
	}
	return k.Service(o.Spec)
}

// Decode parses a manifest of one or more YAML (or JSON) documents separated
// by "---" lines, strictly (unknown fields are errors, as with kubectl), and
// validates every object. It returns either every object or an error naming
// the first bad document: a manifest is applied whole or not at all.
func Decode(data []byte) ([]Object, error) {
	if len(data) > MaxManifestBytes {
		return nil, fmt.Errorf("manifest is %d bytes, more than the %d allowed", len(data), MaxManifestBytes)
	}
	docs := splitDocuments(data)
	if len(docs) > MaxDocuments {
		return nil, fmt.Errorf("manifest has %d documents, more than the %d allowed", len(docs), MaxDocuments)
	}
	var objs []Object
	seen := map[Ref]int{}
	for i, doc := range docs {
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		o, err := decodeOne(doc)
		where := fmt.Sprintf("document %d", i+1)
		if o.Kind != "" && o.Metadata.Name != "" {
			where += fmt.Sprintf(" (%s/%s)", o.Kind, o.Metadata.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if first, dup := seen[o.Ref()]; dup {
			return nil, fmt.Errorf("%s: %s appears twice (documents %d and %d)", where, o.Ref(), first, i+1)
		}
		seen[o.Ref()] = i + 1
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		return nil, errors.New("manifest holds no objects")
	}
	if err := CheckConflicts(objs); err != nil {
		return nil, err
	}
	return objs, nil
}

// DecodeObject parses exactly one object.
func DecodeObject(data []byte) (Object, error) {
	objs, err := Decode(data)
	if err != nil {
		return Object{}, err
	}
	if len(objs) != 1 {
		return Object{}, fmt.Errorf("want one object, got %d", len(objs))
	}
	return objs[0], nil
}

func decodeOne(doc []byte) (Object, error) {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return Object{}, fmt.Errorf("malformed YAML: %w", err)
	}
	if t := bytes.TrimSpace(js); len(t) == 0 || t[0] != '{' {
		return Object{}, errors.New("malformed manifest: a document must be a mapping with apiVersion, kind, metadata and spec")
	}
	var o Object
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return o, fmt.Errorf("malformed manifest: %w", cleanJSONError(err))
	}
	return o, o.Validate()
}

// CheckConflicts refuses two objects of one kind that claim the same target,
// and a Subscription its topic's TopicPolicy does not allow.
func CheckConflicts(objs []Object) error {
	claimed := map[string]Ref{}
	for i := range objs {
		t := objs[i].Target()
		if t == "" {
			continue
		}
		key := objs[i].Kind + "|" + t
		if other, ok := claimed[key]; ok && other != objs[i].Ref() {
			return fmt.Errorf("%s and %s both configure %s; merge them into one", other, objs[i].Ref(), t)
		}
		claimed[key] = objs[i].Ref()
	}
	return checkTopicPolicies(objs)
}

// decodeSpec strictly decodes a spec into v.
func decodeSpec(spec json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(spec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf(": %w", cleanJSONError(err))
	}
	return nil
}

func cleanJSONError(err error) error {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return fmt.Errorf("field %s: want %s, got %s", ute.Field, ute.Type, ute.Value)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	return errors.New(msg)
}

// splitDocuments splits on lines that are exactly "---" (optionally followed
// by spaces or a comment), the YAML document separator.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	start := 0
	for i := 0; i <= len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		var line []byte
		next := len(data) + 1
		if end < 0 {
			line = data[i:]
		} else {
			line = data[i : i+end]
			next = i + end + 1
		}
		l := bytes.TrimRight(line, " \t\r")
		if bytes.HasPrefix(l, []byte("---")) && (len(l) == 3 || l[3] == ' ' || l[3] == '#') {
			docs = append(docs, data[start:i])
			start = min(next, len(data))
		}
		i = next
	}
	docs = append(docs, data[start:])
	return docs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) == 0 || t[0] == '#' {
			continue
		}
		out = append(out, t...)
	}
	return out
}

// Marshal renders objects as a multi-document YAML manifest.
func Marshal(objs []Object) ([]byte, error) {
	var buf bytes.Buffer
	for i := range objs {
		if i > 0 {
			buf.WriteString("---\n")
		}
		js, err := json.Marshal(objs[i])
		if err != nil {
			return nil, err
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return nil, err
		}
		buf.Write(y)
	}
	return buf.Bytes(), nil
}
