package harness

import (
	"maps"
	"testing"
)

func TestParseSwitches(t *testing.T) {
	status := "Name:\tweft\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n"
	if n := parseSwitches(status); n != 127 {
		t.Fatalf("got %d, want 127", n)
	}
	if n := parseSwitches("Name:\tx\n"); n != 0 {
		t.Fatalf("got %d, want 0", n)
	}
}

func TestParsePerfCSV(t *testing.T) {
	out := "10685,,syscalls:sys_enter_read,1223460400,100.00,,\n" +
		"0,,syscalls:sys_enter_open,1223460400,100.00,,\n" +
		"<not counted>,,syscalls:sys_enter_close,0,0.00,,\n" +
		"4180,,syscalls:sys_enter_write,1223604511,100.00,,\n"
	want := map[string]int64{"read": 10685, "write": 4180}
	if got := parsePerfCSV(out); !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got := parsePerfCSV("perf: no permission\n"); got != nil {
		t.Fatalf("got %v, want nil", got)
	}
}

func TestSwitchDeltaAndBusiest(t *testing.T) {
	before := map[int]int64{1: 10, 2: 5}
	after := map[int]int64{1: 30, 2: 6, 3: 4} // thread 3 appeared
	if d := SwitchDelta(before, after); d != 25 {
		t.Fatalf("delta %d, want 25", d)
	}
	if b := BusiestThreads(before, after, 2); len(b) != 2 || b[0] != 20 || b[1] != 4 {
		t.Fatalf("busiest %v", b)
	}
}
