package h1

import (
	"errors"
	"os"
	"time"
)

// errBodyTimeout answers a request body that stalled or trickled below
// the floor (Limits.BodyTimeout, MinBodyRate).
var errBodyTimeout = &protoError{408, "request body too slow: it stalled, or arrived slower than the sidecar's minimum rate"}

// BodyTimedOut reports whether a Result.Err is a request body cut by the
// body timeouts (answered 408).
func BodyTimedOut(err error) bool {
	var pe *protoError
	return errors.As(err, &pe) && pe == errBodyTimeout
}

// bodyReader reads the downstream connection while a request body is
// read, with a deadline before each read: the next bytes must come within
// BodyTimeout, and the body so far must have kept MinBodyRate once its
// first BodyTimeout has passed. That is the earlier of now + BodyTimeout
// and the moment the average would fall below the floor,
// start + BodyTimeout + bytes/MinBodyRate (a credit of time per
// byte, as Kestrel's MinRequestBodyDataRate grants).
type bodyReader struct {
	c     *conn
	start time.Time
	n     int64
}

// exchangeTimedBody is exchange for a request with a body, under the body
// timeouts.
func (c *conn) exchangeTimedBody() action {
	c.bodyRd = bodyReader{c: c, start: time.Now()}
	c.in.src = &c.bodyRd
	act := c.exchange()
	c.in.src = c.nc
	c.bodyRd = bodyReader{}
	return act
}

func (r *bodyReader) Read(p []byte) (int, error) {
	c := r.c
	lim := &c.s.lim
	deadline := time.Now().Add(lim.BodyTimeout)
	if lim.MinBodyRate > 0 {
		credit := time.Duration(float64(r.n) / float64(lim.MinBodyRate) * float64(time.Second))
		if floor := r.start.Add(lim.BodyTimeout + credit); floor.Before(deadline) {
			deadline = floor
		}
	}
	c.nc.SetReadDeadline(deadline)
	n, err := c.nc.Read(p)
	r.n += int64(n)
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && !c.s.inShutdown.Load() {
		return 0, errBodyTimeout
	}
	return n, err
}
