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
			for id := uint32(1); id < 2*(h2ControlBurst+10); id += 2 {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x82}, EndHeaders: true, EndStream: true})
				fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		}), "h2_control_flood"},
		{"PING acks are free", frames(func(fr *http2.Framer) {
			for i := 0; i < 2*h2ControlBurst; i++ {
				fr.WritePing(true, [8]byte{})
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
