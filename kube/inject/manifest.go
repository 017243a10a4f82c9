package inject

import (
	"bytes"
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"
)

// Manifest injects the sidecar into every pod and pod template of a
// multi-document YAML manifest (what `weft inject -f` does): Pods,
// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs;
// other documents pass unchanged. A pod labelled weft.dev/inject=disabled
// is left alone. Comments do not survive (the documents are re-encoded).
func Manifest(c Config, data []byte) ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	n := 0
	for i, doc := range split(data) {
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: malformed YAML: %w", i+1, err)
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || string(t) == "null" {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(js, &obj); err != nil {
			return nil, fmt.Errorf("document %d: not a mapping: %w", i+1, err)
		}
		if err := object(c, obj); err != nil {
			kind, _ := obj["kind"].(string)
			name, _ := nested(obj, "metadata")["name"].(string)
			return nil, fmt.Errorf("document %d (%s/%s): %w", i+1, kind, name, err)
		}
		y, err := yaml.Marshal(obj)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			out.WriteString("---\n")
		}
		out.Write(y)
		n++
	}
	return out.Bytes(), nil
}

// object injects into one decoded Kubernetes object, if it holds a pod.
func object(c Config, obj map[string]any) error {
	var tmpl map[string]any
	switch obj["kind"] {
	case "Pod":
		tmpl = obj
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController":
		tmpl = nested(nested(obj, "spec"), "template")
	case "CronJob":
		tmpl = nested(nested(nested(nested(obj, "spec"), "jobTemplate"), "spec"), "template")
	default:
		return nil
	}
	if tmpl == nil {
		return fmt.Errorf("no pod template")
	}
	meta, spec := nested(tmpl, "metadata"), nested(tmpl, "spec")
	if spec == nil {
		return fmt.Errorf("the pod has no spec")
	}
	if meta == nil {
		meta = map[string]any{}
		tmpl["metadata"] = meta
	}
	if stringMap(meta["labels"])[LabelInject] == "disabled" {
		return nil
	}
	_, err := Pod(c, meta, spec)
	return err
}

func nested(m map[string]any, key string) map[string]any {
	if m == nil {
		return nil
	}
	v, _ := m[key].(map[string]any)
	return v
}

// split cuts a manifest at "---" lines.
func split(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		t := bytes.TrimRight(line, " \t\r\n")
		if bytes.HasPrefix(t, []byte("---")) && (len(t) == 3 || t[3] == ' ' || t[3] == '#') {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}
