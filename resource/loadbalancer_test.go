package resource

import (
	"strings"
	"testing"
)

// TestHashBalanceFactor: loadBalancer.hashBalanceFactor is validated with
// a message naming the field, and reaches the builder's options.
func TestHashBalanceFactor(t *testing.T) {
	withFactor := func(f string) string {
		return strings.Replace(goodPolicy, "    hashKey: header:x-user-id\n", "    hashKey: header:x-user-id\n    hashBalanceFactor: "+f+"\n", 1)
	}
	for _, tc := range []struct {
		name, in, wantErr string
		want              float64
	}{
		{"default", goodPolicy, "", 0},
		{"set", withFactor("1.5"), "", 1.5},
		{"one is allowed", withFactor("1"), "", 1},
		{"below one", withFactor("0.9"), "loadBalancer.hashBalanceFactor: 0.9 is out of range", 0},
		{"zero", withFactor("0"), "loadBalancer.hashBalanceFactor: 0 is out of range", 0},
		{"too large", withFactor("1000"), "loadBalancer.hashBalanceFactor: 1000 is out of range", 0},
		{"not a number", withFactor("lots"), "hashBalanceFactor", 0},
		{"other algorithm", strings.Replace(withFactor("2"), "consistent_hash", "round_robin", 1), "loadBalancer.hashBalanceFactor: only for algorithm consistent_hash", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Decode([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Decode error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			spec, err := ParseTrafficPolicySpec(objs[0].Spec)
			if err != nil {
				t.Fatal(err)
			}
			if got := spec.BuildOptions().HashBalanceFactor; got != tc.want {
				t.Errorf("BuildOptions().HashBalanceFactor = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLoadAwareIsAnAlgorithm(t *testing.T) {
	in := strings.Replace(strings.Replace(goodPolicy, "consistent_hash", "load_aware", 1), "    hashKey: header:x-user-id\n", "", 1)
	if _, err := Decode([]byte(in)); err != nil {
		t.Fatalf("algorithm load_aware: %v", err)
	}
}
