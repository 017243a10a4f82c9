package pipeline

import (
	"math"
	"strconv"
	"time"
)

// ParseGRPCTimeout reads a grpc-timeout value ("100m", "5S": at most 8
// digits and a unit of H, M, S, m, u, n), reporting false for anything
// else.
func ParseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	if n > int64(math.MaxInt64/unit) {
		return math.MaxInt64, true // 99999999H and the like: longer than a Duration holds
	}
	return time.Duration(n) * unit, true
}

// FormatGRPCTimeout renders d as a grpc-timeout value, in the finest unit
// that fits 8 digits.
func FormatGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		d = time.Nanosecond
	}
	const max = 99999999
	for _, u := range []struct {
		unit time.Duration
		c    byte
	}{{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'}, {time.Second, 'S'}, {time.Minute, 'M'}} {
		if n := d / u.unit; n <= max {
			// Round up: a propagated deadline must not come earlier.
			if d%u.unit != 0 {
				n++
			}
			return strconv.FormatInt(int64(n), 10) + string(u.c)
		}
	}
	return strconv.FormatInt(int64(min(d/time.Hour, max)), 10) + "H"
}
