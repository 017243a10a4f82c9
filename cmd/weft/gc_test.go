package main

import "testing"

func TestSidecarGC(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		pct  int
		ok   bool
	}{
		{"sidecar", []string{"weft", "sidecar", "--service", "a"}, nil, sidecarGCPercent, true},
		{"run", []string{"weft", "run", "--service", "a", "--", "app"}, nil, sidecarGCPercent, true},
		{"operator's GOGC wins", []string{"weft", "sidecar"}, map[string]string{"GOGC": "100"}, 0, false},
		{"control plane keeps the default", []string{"weft", "control"}, nil, 0, false},
		{"no command", []string{"weft"}, nil, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pct, ok := sidecarGC(tc.args, env(tc.env))
			if pct != tc.pct || ok != tc.ok {
				t.Fatalf("sidecarGC = %d, %v; want %d, %v", pct, ok, tc.pct, tc.ok)
			}
		})
	}
}
