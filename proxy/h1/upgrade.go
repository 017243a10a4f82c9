package h1

import (
	"fmt"
	"net"
	"time"
)

// Tunneler is an optional Router capability. A Router that has it gets
// Upgrade (WebSocket) and CONNECT requests like any other — Route, Next,
// Answered, Finish — instead of the Server's Fallback, and the engine
// carries the tunnel itself:
//
//   - Upgrade: the request goes to d.Addr with its Connection: Upgrade
//     and Upgrade fields; a 101 answer is relayed and the two connections
//     joined. Any other answer is relayed as a normal response and the
//     connection stays HTTP. An Upgrade to h2c, on HTTP/1.0 or with a
//     body is not a tunnel: it is forwarded without the Upgrade, which is
//     hop-by-hop.
//   - CONNECT: with d.Direct the engine dials d.Addr, answers 200 and
//     joins the connections; otherwise it forwards the CONNECT to d.Addr
//     (another proxy) and joins them on a 2xx answer. A CONNECT with a
//     body is refused (400): what follows its head is tunnel data.
//
// Tunnel is called once the tunnel is open, before a byte of it moves; the
// func it returns (nil: none) is called when the tunnel ends with the bytes
// carried from the client (sent) and back (received). Finish comes after
// that, with Result.End the time the answer was written (so a request's
// duration is its handshake, not the tunnel's life).
type Tunneler interface {
	Tunnel(req *Request, d *Decision) (done func(sent, received int64))
}

// What a request asks for (conn.tun).
const (
	tunNone uint8 = iota
	tunUpgrade
	tunConnect
)

var errConnectBody = &protoError{400, "CONNECT with a body; what follows the head is tunnel data"}

// tunnels reports whether the Router carries tunnels itself.
func (c *conn) tunnels() bool {
	_, ok := c.s.Router.(Tunneler)
	return ok
}

// prepareTunnel sets c.tun for the request just parsed, fixing what a
// tunnel needs (a CONNECT's target as its path, no keep-alive after it).
func (c *conn) prepareTunnel() *protoError {
	c.tun = tunNone
	if !c.m.connect && !c.m.upgrade || !c.tunnels() {
		return nil
	}
	req := &c.req
	if c.m.connect {
		if c.hadBody() {
			return errConnectBody
		}
		c.tun = tunConnect
		req.path = req.Target
		req.KeepAlive = false // after a failed CONNECT the client's next bytes may be tunnel data
		return nil
	}
	if req.ProtoMinor == 0 || c.hadBody() || upgradesToH2C(req) {
		return nil
	}
	c.tun = tunUpgrade
	return nil
}

// upgradesToH2C reports whether an Upgrade names h2c: the mesh speaks h2c
// with prior knowledge, and RFC 9113 dropped the upgrade.
func upgradesToH2C(req *Request) bool {
	for i := range req.Fields {
		if fieldKind(req.Fields[i].Name) != kUpgrade {
			continue
		}
		for v := req.Fields[i].Value; len(v) > 0; {
			var tok []byte
			tok, v = nextToken(v)
			if equalFold(tok, "h2c") {
				return true
			}
		}
	}
	return false
}

// writeUpgradeFields adds, to a forwarded Upgrade request, the two
// hop-by-hop fields that ask the next hop for the same upgrade.
func (c *conn) writeUpgradeFields() {
	o := &c.out
	o.writeString("Connection: Upgrade\r\n")
	writeKind(o, c.req.Fields, kUpgrade)
}

func writeKind(o *outbuf, fields []Field, kind int) {
	for i := range fields {
		if fieldKind(fields[i].Name) == kind {
			o.writeString("Upgrade: ")
			o.write(fields[i].Value)
			o.writeString("\r\n")
		}
	}
}

// switched reports whether the final response head just read opens the
// tunnel.
func (c *conn) switched() bool {
	st := c.resp.status
	if c.tun == tunUpgrade {
		return st == 101
	}
	return st >= 200 && st < 300
}

// switchProtocols relays the upstream's 101 (or 2xx to CONNECT) and joins
// the connections until the tunnel ends; up is closed after it.
func (c *conn) switchProtocols(up *upConn) {
	r, o := &c.resp, &c.out
	c.closeAfter = true
	o.writeString("HTTP/1.1 ")
	o.write(r.code)
	o.writeString("\r\n")
	writeFields(o, r.fields, r.hop, c.d.RespSet)
	c.writeRespSet()
	if c.tun == tunUpgrade {
		o.writeString("Connection: Upgrade\r\n")
		writeKind(o, r.fields, kUpgrade)
	}
	o.writeString("\r\n")
	c.openTunnel(up, up.in.buf[up.in.r:up.in.w])
}

func (c *conn) writeRespSet() {
	o := &c.out
	for i := range c.d.RespSet {
		f := &c.d.RespSet[i]
		o.write(f.Name)
		o.writeString(": ")
		o.write(f.Value)
		o.writeString("\r\n")
	}
}

// connectDirect serves a CONNECT the Router sends straight to d.Addr
// (Decision.Direct): dial, answer 200, tunnel.
func (c *conn) connectDirect() {
	s, req, d, res := c.s, &c.req, &c.d, &c.res
	if _, err := checkFields(d.RespSet, false); err != nil {
		res.Err = err
		return
	}
	var nc net.Conn
	for {
		res.Attempts++
		var err error
		if nc, err = s.ups.dialRaw(d.Addr); err == nil {
			break
		}
		if !s.Router.Next(req, d, err) {
			res.Err = err
			return
		}
	}
	now := time.Now()
	res.UpstreamStart, res.UpstreamHeaders, res.Status = now, now, 200
	c.closeAfter = true
	o := &c.out
	o.writeString("HTTP/1.1 200 OK\r\n")
	c.writeRespSet()
	o.writeString("\r\n")
	c.openTunnel(&upConn{nc: nc}, nil)
}

// openTunnel sends the answer head waiting in c.out downstream, then
// carries bytes both ways until the tunnel ends, and closes up. upLeft
// is what the upstream sent after its answer head, already read.
func (c *conn) openTunnel(up *upConn, upLeft []byte) {
	res := &c.res
	c.up.Store(up)
	defer c.dropUpstream(up)
	res.HeadWritten = true
	if err := c.out.flush(); err != nil {
		res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
		return
	}
	var done func(sent, received int64)
	if t, ok := c.s.Router.(Tunneler); ok {
		done = t.Tunnel(&c.req, &c.d)
	}
	kind := 0
	if c.tun == tunConnect {
		kind = 1
	}
	st := &c.s.tunnels
	st.opened[kind].Add(1)
	st.open.Add(1)
	defer st.open.Add(-1)

	// Bytes already read either side go first: the client may have sent
	// its first frames right behind the request, the upstream right
	// behind its answer.
	var sent, received int64
	if left := c.in.buf[c.in.r:c.in.w]; len(left) > 0 {
		n, err := up.nc.Write(left)
		sent += int64(n)
		if err != nil {
			res.Err = upstreamError(err, nil)
			return
		}
		c.in.r = c.in.w // consumed: counted in ReqBytes
	}
	if len(upLeft) > 0 {
		n, err := c.downW.Write(upLeft)
		received += int64(n)
		if err != nil {
			res.Err = fmt.Errorf("%w: %w", ErrDownstream, err)
			return
		}
	}
	up.release() // the upstream's read buffer; the tunnel copies through two others
	c.in.r, c.in.w = 0, 0
	s, r := c.runTunnel(up.nc, c.in.buf[:cap(c.in.buf)], c.outBlk[:])
	sent += s
	received += r
	c.in.n += s
	c.out.n += received
	if done != nil {
		done(sent, received)
	}
}
