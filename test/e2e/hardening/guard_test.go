package hardening_test

import "testing"

// TestH2GuardNoFastPath: with --no-fast-path net/http serves the listeners
// alone, and the h2 frame guard still cuts off the floods net/http's own
// HTTP/2 server would keep serving.
func TestH2GuardNoFastPath(t *testing.T) {
	m := startMesh(t, startApp(t), "", "--no-fast-path")
	m.waitRoutable(t)
	var guarded []flood
	for _, f := range floods {
		if f.guard != "" {
			guarded = append(guarded, f)
		}
	}
	if len(guarded) == 0 {
		t.Fatal("no flood the guard answers")
	}
	runFloods(t, "inbound", m.inbound, m.serverAdmin, m.server.Pid(), guarded)
}
