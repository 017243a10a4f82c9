package sidecar

import (
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
)

// TestH2Guard: frames a client floods with are counted through Read and
// the connection cut off past the limit; normal traffic and non-HTTP/2
// bytes pass.
func TestH2Guard(t *testing.T) {
	frames := func(write func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		b.WriteString(h2Preface)
		write(http2.NewFramer(&b, nil))
		return b.Bytes()
	}
	tests := []struct {
		name   string
		in     []byte
		reason string
	}{
		{"requests and data", frames(func(fr *http2.Framer) {
			fr.WriteSettings()
			for id := uint32(1); id < 400; id += 2 {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x82}, EndHeaders: true})
				fr.WriteData(id, true, []byte("x"))
			}
		}), ""},
		{"empty DATA frames", frames(func(fr *http2.Framer) {
			for i := 0; i <= h2MaxEmptyFrames; i++ {
				fr.WriteData(1, false, nil)
			}
		}), "h2_empty_frames"},
		{"empty DATA frames, interrupted", frames(func(fr *http2.Framer) {
			for i := 0; i < 3*h2MaxEmptyFrames; i++ {
				fr.WriteData(1, false, nil)
				if i%h2MaxEmptyFrames == 0 {
					fr.WriteData(1, false, []byte("x"))
				}
			}
		}), ""},
		{"rapid reset", frames(func(fr *http2.Framer) {
			for id := uint32(1); id < 4*h2ControlBurst; id += 2 { // twice the burst: the budget refills as the test runs
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x82}, EndHeaders: true, EndStream: true})
				fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		}), "h2_control_flood"},
		{"PING acks are free", frames(func(fr *http2.Framer) {
			for i := 0; i < 2*h2ControlBurst; i++ {
				fr.WritePing(true, [8]byte{})
			}
		}), ""},
		{"tiny WINDOW_UPDATEs", frames(func(fr *http2.Framer) {
			for i := 0; i <= 2*h2ControlBurst; i++ { // twice the burst: the budget refills as the test runs
				fr.WriteWindowUpdate(0, 1)
			}
		}), "h2_control_flood"},
		{"WINDOW_UPDATEs acknowledging data", frames(func(fr *http2.Framer) {
			for i := 0; i <= 2*h2ControlBurst; i++ {
				fr.WriteWindowUpdate(uint32(i%3), 16<<10)
			}
		}), ""},
		{"not HTTP/2", bytes.Repeat([]byte("GET / HTTP/1.1\r\n"), 5000), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			go func() { a.Write(tt.in); a.Close() }()
			var got string
			g := newH2Guard(b, func(r string) { got = r })
			n, _ := io.Copy(io.Discard, g)
			if got != tt.reason {
				t.Fatalf("reason %q, want %q", got, tt.reason)
			}
			if tt.reason == "" && n != int64(len(tt.in)) {
				t.Fatalf("passed %d of %d bytes", n, len(tt.in))
			}
		})
	}
}

// FuzzH2Guard: whatever a client sends, the guard passes a prefix of it
// unchanged, all of it unless it names a reason, and never panics.
func FuzzH2Guard(f *testing.F) {
	f.Add([]byte(h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	f.Add([]byte(h2Preface + "\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01"))
	f.Add([]byte("PRI * HTTP/1.1\r\n\r\n"))
	f.Add([]byte(h2Preface + "\xff\xff\xff\x00\x00\x00\x00\x00\x01abc"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		go func() {
			// Odd-sized writes, so frame headers straddle reads.
			for rest := in; len(rest) > 0; {
				k := min(len(rest), 7)
				if _, err := a.Write(rest[:k]); err != nil {
					break
				}
				rest = rest[k:]
			}
			a.Close()
		}()
		var reason string
		g := newH2Guard(b, func(r string) { reason = r })
		var out bytes.Buffer
		io.Copy(&out, g)
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatal("passed bytes that are not the input's")
		}
		if reason == "" && out.Len() != len(in) {
			t.Fatalf("passed %d of %d bytes without a reason", out.Len(), len(in))
		}
	})
}
