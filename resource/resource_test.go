package resource

import (
	"strings"
	"testing"
)

const goodPolicy = `apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: orders
spec:
  service: orders
  loadBalancer:
    algorithm: consistent_hash
    hashKey: header:x-user-id
`

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		objects int
		wantErr string // substring; "" = no error
	}{
		{"one policy", goodPolicy, 1, ""},
		{"two documents", goodPolicy + "---\n" + strings.ReplaceAll(goodPolicy, "orders", "inventory"), 2, ""},
		{"leading separator and comments", "# policies\n---\n" + goodPolicy + "---\n# trailing\n", 1, ""},
		{"json document", `{"apiVersion":"weft.dev/v1alpha1","kind":"TrafficPolicy","metadata":{"name":"a"},"spec":{"service":"a"}}`, 1, ""},
		{"default algorithm", "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: a}\nspec: {service: a, timeout: 2s}\n", 1, ""},
		{"unknown algorithm lists valid ones", strings.Replace(goodPolicy, "consistent_hash", "fastest", 1), 0, "round_robin"},
		{"hash algorithm needs a key", strings.Replace(goodPolicy, "    hashKey: header:x-user-id\n", "", 1), 0, "hashKey: required"},
		{"bad hash key source", strings.Replace(goodPolicy, "header:x-user-id", "body:x", 1), 0, "not a hash key source"},
		{"malformed yaml", "apiVersion: [\n", 0, "malformed YAML"},
		{"not a mapping", "- a\n- b\n", 0, "must be a mapping"},
		{"unknown kind", strings.Replace(goodPolicy, "TrafficPolicy", "Gateway", 1), 0, `unknown kind "Gateway"`},
		{"missing kind", strings.Replace(goodPolicy, "kind: TrafficPolicy\n", "", 1), 0, "kind is missing"},
		{"wrong apiVersion", strings.Replace(goodPolicy, "v1alpha1", "v9", 1), 0, "unsupported apiVersion"},
		{"unknown field", strings.Replace(goodPolicy, "  service: orders\n", "  service: orders\n  retry: 3\n", 1), 0, "unknown field"},
		{"bad name", strings.Replace(goodPolicy, "name: orders", "name: Orders_1", 1), 0, "metadata.name"},
		{"bad service", strings.Replace(goodPolicy, "service: orders", "service: ''", 1), 0, "spec.service"},
		{"bad timeout", strings.Replace(goodPolicy, "  service: orders\n", "  service: orders\n  timeout: soon\n", 1), 0, "timeout"},
		{"missing spec", "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: a}\n", 0, "spec is missing"},
		{"empty", "# nothing\n", 0, "no objects"},
		{"duplicate object", goodPolicy + "---\n" + goodPolicy, 0, "appears twice"},
		{"two policies for one service", goodPolicy + "---\n" + strings.Replace(goodPolicy, "name: orders", "name: orders2", 1), 0, "both configure service orders"},
		{"error names the document", goodPolicy + "---\n" + strings.Replace(goodPolicy, "name: orders", "name: x\n  labels: 3", 1), 0, "document 2"},
		{"other namespace", strings.Replace(goodPolicy, "name: orders", "name: orders\n  namespace: prod", 1), 0, "namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode error = %v, want one containing %q", err, tt.wantErr)
				}
				if objs != nil {
					t.Fatalf("Decode returned %d objects with an error; want none (all or nothing)", len(objs))
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(objs) != tt.objects {
				t.Fatalf("got %d objects, want %d", len(objs), tt.objects)
			}
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	big := strings.Repeat("#", MaxManifestBytes+1)
	if _, err := Decode([]byte(big)); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("oversized manifest: err = %v", err)
	}
	many := strings.Repeat("---\n", MaxDocuments+1)
	if _, err := Decode([]byte(many)); err == nil || !strings.Contains(err.Error(), "documents") {
		t.Fatalf("too many documents: err = %v", err)
	}
}

func TestParseHashKey(t *testing.T) {
	tests := []struct {
		in   string
		want HashKey
		err  bool
	}{
		{"", HashKey{}, false},
		{"source_ip", HashKey{Source: HashSourceIP}, false},
		{"header:x-user-id", HashKey{Source: HashHeader, Name: "x-user-id"}, false},
		{"cookie:session", HashKey{Source: HashCookie, Name: "session"}, false},
		{"query:user", HashKey{Source: HashQuery, Name: "user"}, false},
		{"header:", HashKey{}, true},
		{"header", HashKey{}, true},
		{"path:x", HashKey{}, true},
		{"header:" + strings.Repeat("a", 300), HashKey{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseHashKey(tt.in)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("ParseHashKey(%q) = %+v, %v; want %+v, err=%v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	objs, err := Decode([]byte(goodPolicy))
	if err != nil {
		t.Fatal(err)
	}
	y, err := Marshal(objs)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode(y)
	if err != nil {
		t.Fatalf("decoding marshalled manifest: %v\n%s", err, y)
	}
	if string(again[0].Spec) != string(objs[0].Spec) || again[0].Ref() != objs[0].Ref() {
		t.Fatalf("round trip changed the object: %s vs %s", again[0].Spec, objs[0].Spec)
	}
	if got := objs[0].Service(); got != "orders" {
		t.Fatalf("Service() = %q, want orders", got)
	}
}

// FuzzDecode: manifests come from users and over the control plane's HTTP
// API; whatever the bytes, Decode must return objects or an error, never
// panic, and what it accepts must be valid.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(goodPolicy))
	f.Add([]byte(goodPolicy + "---\n" + goodPolicy))
	f.Add([]byte("apiVersion: [\n"))
	f.Add([]byte(`{"apiVersion":"weft.dev/v1alpha1","kind":"TrafficPolicy","metadata":{"name":"a"},"spec":{"service":"a"}}`))
	f.Add([]byte("--- \n---#x\n&a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode(data)
		if err != nil {
			return
		}
		for i := range objs {
			if err := objs[i].Validate(); err != nil {
				t.Fatalf("Decode accepted an invalid object: %v", err)
			}
		}
	})
}
