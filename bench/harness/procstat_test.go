package harness

import (
	"encoding/binary"
	"os"
	"runtime"
	"testing"
	"time"
)

// statLine builds a /proc/<pid>/stat line with the given comm, ppid, utime,
// stime and rss; the other fields hold plausible values.
func statLine(pid int, comm string, ppid, utime, stime, rss string) string {
	// Fields 3.. : state ppid pgrp session tty_nr tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime priority nice num_threads
	// itrealvalue starttime vsize rss rsslim ...
	return itoa(pid) + " (" + comm + ") S " + ppid + " 100 100 0 -1 4194560 1234 0 0 0 " +
		utime + " " + stime + " 0 0 20 0 7 0 5555 123456789 " + rss +
		" 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
}

func itoa(i int) string {
	b := []byte{}
	if i == 0 {
		return "0"
	}
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    ProcStat
		wantErr bool
	}{
		{
			name: "plain",
			line: statLine(42, "haproxy", "1", "150", "50", "2048"),
			want: ProcStat{PID: 42, Comm: "haproxy", State: 'S', PPID: 1, UTime: 150, STime: 50, RSS: 2048},
		},
		{
			name: "spaces in name",
			line: statLine(7, "nginx: worker process", "6", "3", "4", "900"),
			want: ProcStat{PID: 7, Comm: "nginx: worker process", State: 'S', PPID: 6, UTime: 3, STime: 4, RSS: 900},
		},
		{
			name: "parens and spaces in name",
			line: statLine(99, "a) S 1 2 (b", "5", "10", "20", "30"),
			want: ProcStat{PID: 99, Comm: "a) S 1 2 (b", State: 'S', PPID: 5, UTime: 10, STime: 20, RSS: 30},
		},
		{
			name: "name is only parens",
			line: statLine(3, "))((", "2", "0", "0", "0"),
			want: ProcStat{PID: 3, Comm: "))((", State: 'S', PPID: 2},
		},
		{
			name: "empty name",
			line: statLine(4, "", "1", "1", "2", "3"),
			want: ProcStat{PID: 4, Comm: "", State: 'S', PPID: 1, UTime: 1, STime: 2, RSS: 3},
		},
		{
			name: "large tick counts",
			line: statLine(5, "weft", "1", "18446744073709551615", "0", "1"),
			want: ProcStat{PID: 5, Comm: "weft", State: 'S', PPID: 1, UTime: 18446744073709551615, RSS: 1},
		},
		{name: "no parens", line: "12 weft S 1 2 3", wantErr: true},
		{name: "truncated", line: "12 (weft) S 1 2 3 4 5", wantErr: true},
		{name: "bad pid", line: "x (weft) S 1", wantErr: true},
		{name: "bad utime", line: statLine(1, "w", "1", "abc", "2", "3"), wantErr: true},
		{name: "empty", line: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStat(tt.line)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseStat(%q) = %+v, want error", tt.line, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseStat(%q): %v", tt.line, err)
			}
			if got != tt.want {
				t.Fatalf("ParseStat(%q)\n got %+v\nwant %+v", tt.line, got, tt.want)
			}
		})
	}
}

func TestReadStatSelf(t *testing.T) {
	st, err := ReadStat(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if st.PID != os.Getpid() || st.PPID != os.Getppid() {
		t.Fatalf("ReadStat(self) = %+v, want pid %d ppid %d", st, os.Getpid(), os.Getppid())
	}
	// RSS and PSS come from two reads (status, smaps_rollup): pages the
	// test's goroutines fault in between may make PSS a little larger.
	if m, err := ReadMem(os.Getpid()); err != nil || m.RSS <= 0 || m.Anon <= 0 || m.File <= 0 || m.PSS <= 0 || m.PSS > m.RSS+1<<20 {
		t.Fatalf("ReadMem(self) = %+v, %v", m, err)
	}
	if ClockTicks() <= 0 {
		t.Fatalf("ClockTicks() = %d", ClockTicks())
	}
}

func TestParseStatusMem(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		want    Mem
		wantErr bool
	}{
		{name: "kB", status: "Name:\tnginx\nVmHWM:\t   20000 kB\nVmRSS:\t   15360 kB\nRssAnon:\t 1 kB\nRssFile:\t   15359 kB\n",
			want: Mem{RSS: 15360 * 1024, Anon: 1024, File: 15359 * 1024, PSS: -1}},
		{name: "no unit, no split", status: "VmRSS: 10\n", want: Mem{RSS: 10, PSS: -1}},
		{name: "kernel thread", status: "Name:\tkthreadd\nState:\tS\n", wantErr: true},
		{name: "garbage", status: "VmRSS:\tlots kB\n", wantErr: true},
		{name: "garbage anon", status: "VmRSS:\t1 kB\nRssAnon:\tx kB\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseStatusMem(tt.status)
			if (err != nil) != tt.wantErr || !tt.wantErr && got != tt.want {
				t.Fatalf("ParseStatusMem = %+v, %v; want %+v, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParsePSS(t *testing.T) {
	rollup := "00400000-7ffd1a9f6000 ---p 00000000 00:00 0                          [rollup]\n" +
		"Rss:               24592 kB\nPss:               12045 kB\nPss_Dirty:          5400 kB\nPss_Anon:           5376 kB\n"
	if got, err := ParsePSS(rollup); err != nil || got != 12045*1024 {
		t.Fatalf("ParsePSS = %d, %v; want %d", got, err, 12045*1024)
	}
	if _, err := ParsePSS("Rss: 1 kB\n"); err == nil {
		t.Fatal("ParsePSS without a Pss line: no error")
	}
}

func TestAuxvValue(t *testing.T) {
	vec := func(kv ...uint64) []byte {
		b := make([]byte, 8*len(kv))
		for i, v := range kv {
			binary.LittleEndian.PutUint64(b[8*i:], v)
		}
		return b
	}
	tests := []struct {
		name   string
		auxv   []byte
		want   uint64
		wantOK bool
	}{
		{name: "found", auxv: vec(6, 4096, 17, 100, 0, 0), want: 100, wantOK: true},
		{name: "after terminator", auxv: vec(6, 4096, 0, 0, 17, 250), wantOK: false},
		{name: "absent", auxv: vec(6, 4096, 0, 0), wantOK: false},
		{name: "truncated", auxv: vec(6, 4096, 17)[:20], wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := auxvValue(tt.auxv, 17)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("auxvValue = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCPUDelta(t *testing.T) {
	hz := float64(ClockTicks())
	tests := []struct {
		name          string
		before, after CPUSnapshot
		wantTicks     float64
	}{
		{name: "two processes", before: CPUSnapshot{1: 100, 2: 50}, after: CPUSnapshot{1: 130, 2: 70}, wantTicks: 50},
		{name: "new worker counts from zero", before: CPUSnapshot{1: 100}, after: CPUSnapshot{1: 110, 3: 5}, wantTicks: 15},
		{name: "vanished process dropped", before: CPUSnapshot{1: 100, 2: 50}, after: CPUSnapshot{1: 101}, wantTicks: 1},
		{name: "pid reused with fewer ticks", before: CPUSnapshot{1: 100}, after: CPUSnapshot{1: 3}, wantTicks: 0},
		{name: "empty", before: CPUSnapshot{}, after: CPUSnapshot{}, wantTicks: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CPUDelta(tt.before, tt.after); got != tt.wantTicks/hz {
				t.Fatalf("CPUDelta = %v s, want %v s", got, tt.wantTicks/hz)
			}
		})
	}
}

func TestMemSamplerPeak(t *testing.T) {
	start, err := ReadMem(os.Getpid())
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	s := SampleMem([]int{os.Getpid(), -1}, time.Millisecond)
	// Grow the resident set by 32 MiB while sampling.
	b := make([]byte, 32<<20)
	for i := range b {
		b[i] = 1
	}
	time.Sleep(20 * time.Millisecond)
	peak := s.Stop()
	runtime.KeepAlive(b)
	if len(peak) != 1 || peak[os.Getpid()].RSS < start.RSS+24<<20 {
		t.Fatalf("peaks = %+v, want one for self with RSS >= %d", peak, start.RSS+24<<20)
	}
	if got := PeakMem(Mem{RSS: 5, PSS: -1}, Mem{RSS: 3, Anon: 2, PSS: 7}); got != (Mem{RSS: 5, Anon: 2, PSS: 7}) {
		t.Fatalf("PeakMem = %+v", got)
	}
}
