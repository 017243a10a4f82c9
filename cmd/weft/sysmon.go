package main

import (
	"os"
	"strings"
	"syscall"
)

// The Go runtime's monitor thread (sysmon) sleeps deeply whenever every P
// is idle, and the first syscall after the process wakes up (the read of a
// request that just arrived) wakes it again with a futex, after which it
// polls every 20 µs until the process is idle again. A sidecar at a few
// thousand requests per second goes idle and wakes up twice per request
// (request in, response back), so every request paid that futex wake-up
// and a few of sysmon's context switches and nanosleeps: the weft pair made
// 13.9 context switches per request at 1000 req/s against HAProxy's 3.8.
// With GODEBUG=schedtrace set, sysmon never sleeps deeply (the runtime
// keeps it awake to print the trace) and settles at one wake-up every
// 10 ms instead; a period of 2^31-1 ms (24.8 days of uptime between lines)
// means it prints nothing in practice. Measured with meshbench (the pair
// beside HAProxy's in the same invocation, bench/README.md): at 1000 req/s
// context switches per request 12.8 -> 4.3 (HAProxy's 3.8) and CPU per
// request 392 -> 210 µs (HAProxy's 228-232); at 100 req/s (-perf) futex
// 5.7 -> 0 and nanosleep 4.2 -> 1.7 per request.
// The price is an idle sidecar's sysmon waking every 10 ms (an idle
// sidecar went from 100 to 148 context switches per second, its CPU from
// 0.2 to 0.4 ms per second). The variable is only read at
// start-up, so the sidecar re-executes itself with it set, and restores the
// environment its children (weft run's app) inherit.
const (
	sysmonDebug = "schedtrace=2147483647"
	// sysmonEnv carries the original GODEBUG across the re-exec ("-" for
	// unset); its presence also says the re-exec happened.
	sysmonEnv = "WEFT_ORIG_GODEBUG"
	// sysmonOff lets an operator keep the runtime's default (WEFT_SYSMON=default).
	sysmonOff = "WEFT_SYSMON"
)

// sysmonCommands are the subcommands that run a sidecar.
var sysmonCommands = map[string]bool{"sidecar": true, "run": true}

// keepSysmonAwake re-executes the process with sysmonDebug added to
// GODEBUG when it runs a sidecar, or after that re-exec restores GODEBUG.
// Any failure leaves the process as it is.
func keepSysmonAwake() {
	if orig, ok := os.LookupEnv(sysmonEnv); ok {
		os.Unsetenv(sysmonEnv)
		if orig == "-" {
			os.Unsetenv("GODEBUG")
		} else {
			os.Setenv("GODEBUG", orig)
		}
		return
	}
	if len(os.Args) < 2 || !sysmonCommands[os.Args[1]] {
		return
	}
	env, ok := sysmonEnviron(os.Environ())
	if !ok {
		return
	}
	if exe, err := os.Executable(); err == nil {
		_ = syscall.Exec(exe, os.Args, env)
	}
}

// sysmonEnviron is the environment to re-execute with, or false when the
// process should run as it is: GODEBUG already sets schedtrace (the
// operator's), or WEFT_SYSMON=default asks for the runtime's default.
func sysmonEnviron(environ []string) ([]string, bool) {
	orig, set := "", false
	for _, kv := range environ {
		if kv == sysmonOff+"=default" {
			return nil, false
		}
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			orig, set = v, true
		}
	}
	if strings.Contains(orig, "schedtrace=") {
		return nil, false
	}
	mark, godebug := "-", sysmonDebug
	if set {
		mark = orig
		if orig != "" {
			godebug = orig + "," + sysmonDebug
		}
	}
	env := []string{"GODEBUG=" + godebug, sysmonEnv + "=" + mark}
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	return env, true
}
