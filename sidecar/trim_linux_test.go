package sidecar

import (
	"encoding/binary"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

const smapsFixture = `00400000-0117f000 r-xp 00000000 fe:00 9978057                            /usr/bin/weft
Size:              14844 kB
Rss:                8828 kB
Pss:                2952 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me dw sd
0117f000-01fde000 r--p 00d7f000 fe:00 9978057                            /usr/bin/weft
Size:              14716 kB
Rss:               10364 kB
Anonymous:             0 kB
VmFlags: rd mr mw me dw sd
01fde000-02065000 rw-p 01bde000 fe:00 9978057                            /usr/bin/weft
Size:                540 kB
Rss:                 476 kB
Anonymous:           152 kB
02065000-040ad000 rw-p 00000000 00:00 0
Rss:                 120 kB
Anonymous:           120 kB
7f0000000000-7f0000010000 r--p 00000000 fe:00 9978057                    /usr/bin/weft (deleted)
Rss:                  64 kB
Anonymous:             4 kB
7f0000020000-7f0000030000 r--p 00000000 fe:01 9978057                    /other/fs/same-inode
Rss:                  64 kB
Anonymous:             0 kB
7f0000040000-7f0000050000 r--p 00000000 fe:00 1234                       /usr/lib/other.so
Rss:                  64 kB
Anonymous:             0 kB
7f0000060000-7f0000070000 r--s 00000000 fe:00 9978057                    /usr/bin/weft
Rss:                  64 kB
Anonymous:             0 kB
7ffc96d27000-7ffc96d48000 rw-p 00000000 00:00 0                          [stack]
Rss:                  20 kB
Anonymous:            20 kB
`

func TestExeRegions(t *testing.T) {
	got, err := exeRegions(strings.NewReader(smapsFixture), 0xfe, 0, 9978057)
	if err != nil {
		t.Fatal(err)
	}
	// Only the text and the read-only data: not the writable data, not a
	// mapping with a private copy in it, not another device's file with the
	// same inode number, not another file, not a shared mapping.
	want := []region{
		{start: 0x400000, end: 0x117f000, rss: 8828 << 10},
		{start: 0x117f000, end: 0x1fde000, rss: 10364 << 10},
	}
	if len(got) != len(want) {
		t.Fatalf("exeRegions = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("region %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestTrimExecutable trims this test binary's own pages and keeps running
// code and reading read-only data afterwards: they fault back in.
func TestTrimExecutable(t *testing.T) {
	before := rssFile(t)
	released, err := trimExecutable()
	if err != nil {
		t.Fatalf("trimExecutable: %v", err)
	}
	after := rssFile(t)
	if released <= 0 || after >= before {
		t.Errorf("released %d bytes; RssFile %d kB before, %d kB after: want it lower", released, before, after)
	}
	// Code and read-only data (sort, strconv's tables, the fixture) are
	// still there.
	xs := []int{3, 1, 2}
	sort.Ints(xs)
	if xs[0] != 1 || strconv.Quote("é") != `"é"` || !strings.HasPrefix(smapsFixture, "00400000-") {
		t.Fatal("the program no longer works after a trim")
	}
	if _, err := trimExecutable(); err != nil {
		t.Fatalf("second trim: %v", err)
	}
}

func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			return kB(v) >> 10
		}
	}
	t.Skip("no RssFile in /proc/self/status")
	return 0
}

// BenchmarkTrimExecutable is one trim: reading smaps and dropping the
// mappings (the refaults that follow are the caller's).
func BenchmarkTrimExecutable(b *testing.B) {
	for b.Loop() {
		if _, err := trimExecutable(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestNoFaultAround maps a file, registers the mapping as the trim does
// with the executable's, and checks that a read maps the one page it
// touches (the kernel would otherwise map its 64 KiB neighbourhood) and
// that the data reads back as written.
func TestNoFaultAround(t *testing.T) {
	const pages = 64
	f, err := os.CreateTemp(t.TempDir(), "map")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, pages*4096)
	for i := range want {
		want[i] = byte(i * 7)
	}
	if _, err := f.Write(want); err != nil {
		t.Fatal(err)
	}
	data, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_PRIVATE)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(data)
	start := uintptr(unsafe.Pointer(&data[0]))
	if err := noFaultAround([]region{{start: start, end: start + uintptr(len(data))}}); err != nil {
		t.Skipf("fault-around cannot be switched off here: %v", err)
	}
	if err := noFaultAround([]region{{start: start, end: start + uintptr(len(data))}}); err != nil {
		t.Fatalf("registering again: %v", err)
	}
	if data[20*4096+5] != want[20*4096+5] {
		t.Fatal("read back a different byte")
	}
	if n := presentPages(t, start, pages); n != 1 {
		t.Errorf("%d pages mapped after reading one, want 1", n)
	}
	// A trim (MADV_DONTNEED) and the data comes back from the file.
	if err := unix.Madvise(data, unix.MADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if n := presentPages(t, start, pages); n != 0 {
		t.Errorf("%d pages mapped after MADV_DONTNEED, want 0", n)
	}
	if string(data) != string(want) {
		t.Fatal("the mapping reads differently after MADV_DONTNEED")
	}
}

// presentPages counts the pages of [start, start+n pages) mapped in this
// process (/proc/self/pagemap, bit 63).
func presentPages(t *testing.T, start uintptr, n int) int {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no pagemap: %v", err)
	}
	defer f.Close()
	buf := make([]byte, 8*n)
	if _, err := f.ReadAt(buf, int64(start/4096*8)); err != nil {
		t.Fatal(err)
	}
	c := 0
	for i := 0; i < n; i++ {
		if binary.LittleEndian.Uint64(buf[8*i:])&(1<<63) != 0 {
			c++
		}
	}
	return c
}
