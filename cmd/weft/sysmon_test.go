package main

import (
	"slices"
	"testing"
)

func TestSysmonEnviron(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string // nil: no re-exec
	}{
		{"no GODEBUG", []string{"PATH=/bin"}, []string{"GODEBUG=" + sysmonDebug, sysmonEnv + "=-", "PATH=/bin"}},
		{"empty GODEBUG", []string{"GODEBUG=", "A=1"}, []string{"GODEBUG=" + sysmonDebug, sysmonEnv + "=", "A=1"}},
		{"operator's GODEBUG kept", []string{"A=1", "GODEBUG=http2debug=1"},
			[]string{"GODEBUG=http2debug=1," + sysmonDebug, sysmonEnv + "=http2debug=1", "A=1"}},
		{"operator's schedtrace wins", []string{"GODEBUG=schedtrace=1000"}, nil},
		{"opted out", []string{"WEFT_SYSMON=default"}, nil},
	} {
		got, ok := sysmonEnviron(tc.in)
		if ok != (tc.want != nil) || !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q (%v), want %q", tc.name, got, ok, tc.want)
		}
	}
}
