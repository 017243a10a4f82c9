package version

import (
	"regexp"
	"runtime"
	"testing"
)

func TestGet(t *testing.T) {
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	cases := []struct {
		name                string
		version, commit, dt string
		want                *regexp.Regexp
	}{
		{"stamped", "v1.2.3", "abc1234def56", "2026-12-03T08:00:00Z",
			regexp.MustCompile(`^weft v1\.2\.3 \(commit abc1234def56, ` + regexp.QuoteMeta(runtime.Version()) + `, built 2026-12-03T08:00:00Z\)$`)},
		// A test binary has no VCS stamp: the fallbacks show.
		{"not stamped", "", "", "",
			regexp.MustCompile(`^weft \S+ \(commit \S+, ` + regexp.QuoteMeta(runtime.Version()) + `, built \S+\)$`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			version, commit, date = tc.version, tc.commit, tc.dt
			in := Get()
			if !tc.want.MatchString(in.String()) {
				t.Errorf("Get() = %q, want %s", in, tc.want)
			}
			if in.Version == "" || in.Commit == "" || in.Date == "" || in.GoVersion == "" {
				t.Errorf("Get() = %+v: no field may be empty", in)
			}
			if Short() != in.Version {
				t.Errorf("Short() = %q, want %q", Short(), in.Version)
			}
		})
	}
}
