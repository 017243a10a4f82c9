// Package version is what this weft binary is: its release, commit, Go
// version and build date. `make build` stamps them with -ldflags -X; a
// binary built by plain `go build` or `go install` falls back to what the
// Go toolchain recorded (module version, VCS revision and time).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Stamped at build time:
//
//	go build -ldflags "-X github.com/weftmesh/weft/version.version=v0.3.0 -X …version.commit=abc1234 -X …version.date=2026-12-03T08:00:00Z"
var (
	version string
	commit  string
	date    string
)

// Info describes the binary.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Date      string `json:"date"`
}

// Get returns the stamped values, filled in from the build info where a
// value was not stamped; "unknown" where neither knows.
func Get() Info {
	in := Info{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			in.Version = bi.Main.Version
		}
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if in.Commit == "" {
					in.Commit = short(s.Value)
				}
			case "vcs.time":
				if in.Date == "" {
					in.Date = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if dirty && commit == "" && in.Commit != "" {
			in.Commit += "-dirty"
		}
	}
	if in.Version == "" {
		in.Version = "dev"
	}
	if in.Commit == "" {
		in.Commit = "unknown"
	}
	if in.Date == "" {
		in.Date = "unknown"
	}
	return in
}

// Short is the version alone, as sidecars and the control plane report it
// to each other.
func Short() string { return Get().Version }

// String is the one line `weft version` prints.
func (in Info) String() string {
	return fmt.Sprintf("weft %s (commit %s, %s, built %s)", in.Version, in.Commit, in.GoVersion, in.Date)
}

func short(rev string) string {
	rev = strings.TrimSpace(rev)
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
