package sidecar

import (
	"errors"
	"net"
	"time"
)

// h2guard watches the frames an HTTP/2 client sends on a connection the
// fast path handed to net/http, and closes the connection when the client
// floods it with frames that cost the server work but carry no request:
// net/http's HTTP/2 server bounds memory under such floods but keeps
// serving them (rapid reset, SETTINGS, empty DATA frames, tiny
// WINDOW_UPDATEs), so one client could keep a core busy. Limits in the
// spirit of Envoy's max_consecutive_inbound_frames_with_empty_payload and
// its control-frame budgets.
//
// It only reads the 9-byte frame headers as the bytes pass through Read
// (no copy, no allocation); a connection that does not start with the
// HTTP/2 client preface (Upgrade, CONNECT) is passed through untouched.
type h2guard struct {
	net.Conn
	onFlood func(reason string)

	pos      int     // bytes of the preface seen, while < len(preface)
	off      bool    // not HTTP/2: pass through
	hdr      [9]byte // the frame header being read
	hn       int     // bytes of hdr read
	skip     int     // payload bytes of the current frame still to pass
	wu       [4]byte // a WINDOW_UPDATE's increment, as it is read
	wun      int     // bytes of wu still to read (0: not in one)
	empty    int     // consecutive frames with an empty payload and no end flag
	tokens   float64 // control-frame budget
	last     time.Time
	violated error
}

// Guard limits.
const (
	h2MaxEmptyFrames = 100   // consecutive empty DATA/HEADERS/CONTINUATION frames without END_STREAM/END_HEADERS
	h2ControlBurst   = 10000 // SETTINGS, PING, RST_STREAM, PRIORITY and small WINDOW_UPDATE frames in a burst
	h2ControlRate    = 5000  // ... and per second after it
	// h2SmallWindowUpdate: WINDOW_UPDATE frames with an increment below it
	// count as control frames.
	h2SmallWindowUpdate = 4096
)

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var errH2Flood = errors.New("http2 frame flood: connection closed")

func newH2Guard(c net.Conn, onFlood func(reason string)) *h2guard {
	return &h2guard{Conn: c, onFlood: onFlood, tokens: h2ControlBurst}
}

func (g *h2guard) Read(p []byte) (int, error) {
	if g.violated != nil {
		return 0, g.violated
	}
	n, err := g.Conn.Read(p)
	if !g.off && n > 0 {
		if reason := g.scan(p[:n]); reason != "" {
			g.violated = errH2Flood
			g.onFlood(reason)
			g.Conn.Close()
			return 0, g.violated
		}
	}
	return n, err
}

// scan walks the frame headers in b; it returns why the client is cut off,
// or "".
func (g *h2guard) scan(b []byte) string {
	for len(b) > 0 {
		if g.pos < len(h2Preface) {
			if b[0] != h2Preface[g.pos] {
				g.off = true
				return ""
			}
			g.pos++
			b = b[1:]
			continue
		}
		if g.skip > 0 {
			k := min(g.skip, len(b))
			if g.wun > 0 {
				c := copy(g.wu[4-g.wun:], b[:min(k, g.wun)])
				if g.wun -= c; g.wun == 0 {
					inc := uint32(g.wu[0]&0x7f)<<24 | uint32(g.wu[1])<<16 | uint32(g.wu[2])<<8 | uint32(g.wu[3])
					if inc < h2SmallWindowUpdate {
						if r := g.control(); r != "" {
							return r
						}
					}
				}
			}
			g.skip -= k
			b = b[k:]
			continue
		}
		k := copy(g.hdr[g.hn:], b)
		g.hn += k
		b = b[k:]
		if g.hn < len(g.hdr) {
			return ""
		}
		g.hn = 0
		length := int(g.hdr[0])<<16 | int(g.hdr[1])<<8 | int(g.hdr[2])
		typ, flags := g.hdr[3], g.hdr[4]
		g.skip = length
		if r := g.frame(typ, flags, length); r != "" {
			return r
		}
	}
	return ""
}

// Frame types and flags (RFC 9113 §6).
const (
	frData, frHeaders, frPriority, frRST, frSettings, frPush, frPing, frGoAway, frWindow, frContinuation = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
	flagEndStream, flagAck, flagEndHeaders                                                               = 0x1, 0x1, 0x4
)

func (g *h2guard) frame(typ, flags byte, length int) string {
	switch typ {
	case frData, frHeaders, frContinuation:
		end := flags&flagEndStream != 0
		if typ != frData {
			end = flags&flagEndHeaders != 0
		}
		if length == 0 && !end {
			if g.empty++; g.empty > h2MaxEmptyFrames {
				return "h2_empty_frames"
			}
		} else {
			g.empty = 0
		}
	case frSettings, frPing:
		if flags&flagAck != 0 {
			return ""
		}
		return g.control()
	case frRST, frPriority:
		return g.control()
	case frWindow:
		// Only small increments count: a client acknowledging the data it
		// receives sends one update per many KiB (Go: 4 KiB at least,
		// gRPC: a quarter window), however fast the data flows, while a
		// flood of tiny ones is all cost. A malformed length is net/http's
		// to refuse.
		if length == 4 {
			g.wun = 4
		}
	}
	return ""
}

// control spends one token of the control-frame budget.
func (g *h2guard) control() string {
	now := time.Now()
	if !g.last.IsZero() {
		g.tokens = min(h2ControlBurst, g.tokens+now.Sub(g.last).Seconds()*h2ControlRate)
	}
	g.last = now
	if g.tokens < 1 {
		return "h2_control_flood"
	}
	g.tokens--
	return ""
}

// CloseWrite half-closes the connection when the underlying one can, as
// a tunnel (CONNECT) needs; otherwise it closes it.
func (g *h2guard) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return g.Conn.Close()
}
