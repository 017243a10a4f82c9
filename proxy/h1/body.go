package h1

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"sync"
	"time"
)

// bufSize is the size of every pooled buffer: a downstream connection's
// read buffer, the write buffer of an exchange and an upstream
// connection's read buffer while it is in use. 16 KiB holds a typical head
// and a small body whole, so a small exchange is one read and one write
// per hop, and a large body streams in 16 KiB reads and writes.
const bufSize = 16 << 10

// block is one pooled buffer; pooling a pointer to an array keeps Get and
// Put allocation-free.
type block [bufSize]byte

var blockPool = sync.Pool{New: func() any { return new(block) }}

// inbuf is a hand-rolled read buffer: unlike bufio.Reader it exposes its
// bytes, so heads are parsed in place and body bytes are written out of it
// without a copy.
type inbuf struct {
	buf  []byte
	r, w int
	src  io.Reader
	n    int64 // bytes read from src
}

// consumed is the number of bytes read from src and used.
func (b *inbuf) consumed() int64 { return b.n - int64(b.w-b.r) }

// fill reads more bytes after buf[r:w], moving them to the front first when
// the buffer is full. It returns errBufferFull when there is no room at
// all, and an error only when nothing was read.
func (b *inbuf) fill() error {
	if b.r == b.w {
		b.r, b.w = 0, 0
	} else if b.w == len(b.buf) {
		if b.r == 0 {
			return errBufferFull
		}
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	for tries := 0; ; tries++ {
		n, err := b.src.Read(b.buf[b.w:])
		b.w += n
		b.n += int64(n)
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
		if tries == 100 {
			return io.ErrNoProgress
		}
	}
}

var errBufferFull = errors.New("h1: buffer full")

// outbuf coalesces writes to dst; its first error sticks. Writing a head and
// the bytes of a small body already read costs one write syscall.
type outbuf struct {
	buf []byte // pending bytes; cap is the buffer size
	dst io.Writer
	n   int64 // bytes written to dst
	err error
	// last is when the latest write to dst began: the moment its bytes
	// were handed to the kernel (see Result.End).
	last time.Time
}

func (o *outbuf) flush() error {
	if o.err == nil && len(o.buf) > 0 {
		var n int
		o.last = time.Now()
		n, o.err = o.dst.Write(o.buf)
		o.n += int64(n)
	}
	o.buf = o.buf[:0]
	return o.err
}

func (o *outbuf) write(p []byte) {
	if len(o.buf)+len(p) <= cap(o.buf) {
		o.buf = append(o.buf, p...)
		return
	}
	if o.flush() != nil {
		return
	}
	if len(p) >= cap(o.buf)/2 {
		var n int
		o.last = time.Now()
		n, o.err = o.dst.Write(p)
		o.n += int64(n)
		return
	}
	o.buf = append(o.buf, p...)
}

func (o *outbuf) writeString(s string) {
	for len(s) > 0 {
		if len(o.buf) == cap(o.buf) && o.flush() != nil {
			return
		}
		k := min(len(s), cap(o.buf)-len(o.buf))
		o.buf = append(o.buf, s[:k]...)
		s = s[k:]
	}
}

// room makes at least n bytes free (n must be small).
func (o *outbuf) room(n int) bool {
	if cap(o.buf)-len(o.buf) < n {
		o.flush()
	}
	return o.err == nil
}

func (o *outbuf) writeInt(v int64) {
	if o.room(20) {
		o.buf = strconv.AppendInt(o.buf, v, 10)
	}
}

func (o *outbuf) writeHex(v int64) {
	if o.room(16) {
		o.buf = strconv.AppendUint(o.buf, uint64(v), 16)
	}
}

// readErr turns an early end of the source into io.ErrUnexpectedEOF.
func readErr(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// copyN streams exactly n bytes from in to out. It flushes out before each
// read so a slow body is forwarded as it arrives. rerr is a failure of the
// source (or a framing error), werr of the destination.
func copyN(in *inbuf, out *outbuf, n int64) (rerr, werr error) {
	for n > 0 {
		if in.r == in.w {
			if err := out.flush(); err != nil {
				return nil, err
			}
			if err := in.fill(); err != nil {
				return readErr(err), nil
			}
		}
		k := int(min(int64(in.w-in.r), n))
		out.write(in.buf[in.r : in.r+k])
		in.r += k
		n -= int64(k)
		if out.err != nil {
			return nil, out.err
		}
	}
	return nil, nil
}

// copyUntilEOF streams a close-delimited body. With rechunk it sends it on
// with chunked framing (so the downstream connection can stay open); a
// source that fails rather than ending cleanly leaves the chunked body
// unterminated, which the receiver sees as the truncation it is.
func copyUntilEOF(in *inbuf, out *outbuf, rechunk bool) (rerr, werr error) {
	for {
		if p := in.buf[in.r:in.w]; len(p) > 0 {
			if rechunk {
				out.writeHex(int64(len(p)))
				out.writeString("\r\n")
				out.write(p)
				out.writeString("\r\n")
			} else {
				out.write(p)
			}
			in.r = in.w
		}
		if err := out.flush(); err != nil {
			return nil, err
		}
		if err := in.fill(); err != nil {
			if err != io.EOF {
				return err, nil
			}
			if rechunk {
				out.writeString("0\r\n\r\n")
			}
			return nil, out.err
		}
	}
}

// maxChunkLine bounds a chunk-size line with its extensions, as net/http
// does.
const maxChunkLine = 4096

// readLine returns the next CRLF-terminated line in, without the CRLF, and
// consumes it; the line stays valid until the next fill. Lines longer than
// max (which must not exceed the buffer) are errLong.
func readLine(in *inbuf, out *outbuf, max int, errLong error) ([]byte, error) {
	scanned := 0
	for {
		if i := bytes.IndexByte(in.buf[in.r+scanned:in.w], '\n'); i >= 0 {
			lf := in.r + scanned + i
			if lf-in.r+1 > max {
				return nil, errLong
			}
			if lf == in.r || in.buf[lf-1] != '\r' {
				return nil, errBareLF
			}
			line := in.buf[in.r : lf-1]
			in.r = lf + 1
			return line, nil
		}
		scanned = in.w - in.r
		if scanned >= max {
			return nil, errLong
		}
		if err := out.flush(); err != nil {
			return nil, err
		}
		if err := in.fill(); err != nil {
			if err == errBufferFull {
				return nil, errLong
			}
			return nil, readErr(err)
		}
	}
}

// parseChunkSize reads a chunk-size line: 1 to 15 hex digits (so no
// overflow), then either extensions (";" and no CTL) or optional
// whitespace. The extensions are dropped when forwarding.
func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto digitsDone
		}
		if i == 15 {
			return 0, errChunkSize
		}
		n = n<<4 | int64(d)
	}
digitsDone:
	if i == 0 {
		return 0, errChunkSize
	}
	// Extensions start right after the digits; whitespace may only trail
	// a bare size. (RFC 9112 allows whitespace before ";", net/http does
	// not: where parsers disagree, the engine takes the strict side.)
	rest := line[i:]
	if len(rest) > 0 && rest[0] == ';' {
		if !allIn(rest, &valueByte) {
			return 0, errChunkSize
		}
	} else if len(trimOWS(rest)) > 0 {
		return 0, errChunkSize
	}
	return n, nil
}

// chunkLimits bound a chunked body's trailer section; grpcStatus, when
// set (a response's), receives a grpc-status trailer's value.
type chunkLimits struct {
	maxTrailerBytes, maxTrailers int
	grpcStatus                   *string
}

// copyChunked streams one chunked body from in to out, parsing its framing
// so the engine knows where it ends. Passing it on (dechunk false), the
// framing is re-emitted canonically: sizes in lowercase hex without
// extensions, then the trailer fields that are not hop-by-hop or framing
// fields. With dechunk (an HTTP/1.0 recipient) only the data is written.
// Errors: a *protoError for malformed framing, else rerr for the source and
// werr for the destination.
func copyChunked(in *inbuf, out *outbuf, dechunk bool, lim chunkLimits) (rerr, werr error) {
	split := func(err error) (error, error) {
		if err == out.err && err != nil {
			return nil, err
		}
		return err, nil
	}
	maxLine := min(maxChunkLine, len(in.buf))
	for {
		line, err := readLine(in, out, maxLine, errChunkLine)
		if err != nil {
			return split(err)
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return err, nil
		}
		if !dechunk {
			out.writeHex(size)
			out.writeString("\r\n")
		}
		if size == 0 {
			break
		}
		if rerr, werr := copyN(in, out, size); rerr != nil || werr != nil {
			return rerr, werr
		}
		for in.w-in.r < 2 {
			if err := out.flush(); err != nil {
				return nil, err
			}
			if err := in.fill(); err != nil {
				return readErr(err), nil
			}
		}
		if in.buf[in.r] != '\r' || in.buf[in.r+1] != '\n' {
			return errChunkCRLF, nil
		}
		in.r += 2
		if !dechunk {
			out.writeString("\r\n")
		}
		if out.err != nil {
			return nil, out.err
		}
	}
	total, count := 0, 0
	for {
		line, err := readLine(in, out, min(lim.maxTrailerBytes-total, len(in.buf)), errTrailer)
		if err != nil {
			return split(err)
		}
		if len(line) == 0 {
			if !dechunk {
				out.writeString("\r\n")
			}
			return nil, out.err
		}
		total += len(line) + 2
		if count++; count > lim.maxTrailers {
			return errTrailer, nil
		}
		name, value, err := parseField(line)
		if err != nil {
			return err, nil
		}
		if lim.grpcStatus != nil && isGRPCStatus(name) {
			*lim.grpcStatus = grpcStatusString(value)
		}
		if dechunk || fieldKind(name) != kOther {
			continue
		}
		out.write(name)
		out.writeString(": ")
		out.write(value)
		out.writeString("\r\n")
	}
}

// discard is a sink for request bodies the engine reads only to keep the
// connection usable (after a local answer), up to left bytes.
type discard struct{ left int64 }

var errDiscardLimit = errors.New("h1: request body too large to discard")

func (d *discard) Write(p []byte) (int, error) {
	if d.left -= int64(len(p)); d.left < 0 {
		return 0, errDiscardLimit
	}
	return len(p), nil
}
