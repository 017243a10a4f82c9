package h1

import (
	"time"
)

// ReplyAwaiter is an upstream connection without an fd of its own (the
// mTLS connection to another sidecar) that can write the last bytes of a
// request and return only once the reply can be read. The engine calls
// WriteAwait for the final write of a request on a connection that was
// dialled or used within awaitFresh; an implementation that cannot (a
// write that would block, a record it did not expect) just writes.
//
// Why, and why it cannot miss the reply: package awaitreply, which does
// it on a connection with an fd of its own.
type ReplyAwaiter interface {
	WriteAwait(p []byte) (int, error)
}

// awaitFresh bounds how long a pooled connection may have sat idle for the
// request's last write to wait for the reply before reading. Data or an
// EOF that arrived while it was idle are not announced again once the
// wait clears the fd's readiness; a peer that closed altogether answers
// the write with a reset (a new edge), but one that only half-closed and
// lingers (lingering close) would let the request wait for its reset or
// the timeout. Servers close idle connections after seconds, not within
// one; an older connection reads first, as before.
const awaitFresh = time.Second

// writeAwait writes the request's last bytes to the upstream, waiting for
// the reply to be readable when it can (see ReplyAwaiter).
func (uc *upConn) writeAwait(p []byte) (int, error) {
	if !uc.fresh {
		return uc.nc.Write(p)
	}
	if uc.aw.Ready() {
		return uc.aw.Write(uc.nc, p)
	}
	if ra, ok := uc.nc.(ReplyAwaiter); ok {
		return ra.WriteAwait(p)
	}
	return uc.nc.Write(p)
}

// flushAwait is flush for the last write of a request to up. It leaves
// o.last alone: that is the downstream's (Result.End).
func (o *outbuf) flushAwait(up *upConn) error {
	if o.err == nil && len(o.buf) > 0 {
		var n int
		n, o.err = up.writeAwait(o.buf)
		o.n += int64(n)
	}
	o.buf = o.buf[:0]
	return o.err
}
