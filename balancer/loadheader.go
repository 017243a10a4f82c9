package balancer

import (
	"math"
	"strconv"
)

// LoadHeader is the response header in which an instance's sidecar reports
// the instance's load to its callers (like gRPC's ORCA): the inbound sidecar
// adds it to every response, the calling sidecar hands its value to
// Endpoint.ReportLoad. Its format is LoadReport's.
const LoadHeader = "x-weft-load"

// LoadReport is one instance's load as its sidecar measured it, and the value
// of LoadHeader, for example
//
//	v=1;h=0.580;cpu=0.420;mem=0.100;inflight=3;lat=12.5
//
// Fields are key=value, separated by ';'. v (the format's version, 1) comes
// first; h is required; the others may be missing (not measured). Unknown
// keys are skipped, so a later sidecar may add fields; a new v means a
// format this one cannot read, and the whole value is ignored.
type LoadReport struct {
	// Headroom (h) is what callers balance on: 1 - max(CPU, Mem), 0 … 1.
	Headroom float64
	// CPU (cpu) is the instance's CPU use as a fraction of what it may use
	// (its cgroup's quota, else every CPU of the host), 0 … 1; <0: unknown.
	CPU float64
	// Mem (mem) is its memory pressure, 0 … 1: the larger of memory.current
	// over memory.max and the cgroup's memory PSI (some, avg10); <0: unknown.
	Mem float64
	// InFlight (inflight) counts the requests its app is serving.
	InFlight int64
	// LatencyMs (lat) is an EWMA of its app's response time in
	// milliseconds; <0: unknown.
	LatencyMs float64
}

// MaxLoadHeader bounds the value ParseLoad reads; a longer one is ignored.
const MaxLoadHeader = 256

// maxLoadFields bounds the fields of one value, known or not.
const maxLoadFields = 16

// AppendLoad appends r in LoadHeader's format to dst.
func AppendLoad(dst []byte, r LoadReport) []byte {
	dst = append(dst, "v=1;h="...)
	dst = strconv.AppendFloat(dst, clamp01(r.Headroom), 'f', 3, 64)
	if r.CPU >= 0 {
		dst = append(dst, ";cpu="...)
		dst = strconv.AppendFloat(dst, clamp01(r.CPU), 'f', 3, 64)
	}
	if r.Mem >= 0 {
		dst = append(dst, ";mem="...)
		dst = strconv.AppendFloat(dst, clamp01(r.Mem), 'f', 3, 64)
	}
	dst = append(dst, ";inflight="...)
	dst = strconv.AppendInt(dst, min(max(r.InFlight, 0), maxInFlight), 10)
	if r.LatencyMs >= 0 {
		dst = append(dst, ";lat="...)
		dst = strconv.AppendFloat(dst, min(r.LatencyMs, maxLatencyMs), 'f', 1, 64)
	}
	return dst
}

const (
	maxInFlight  = 1<<20 - 1 // what pack keeps
	maxLatencyMs = 1e6       // 1000 s
)

// ParseLoad reads a LoadHeader value. It is hand-written rather than
// strings.Split and strconv.ParseFloat because it runs on every response a
// sidecar receives and must not allocate; ok is false for anything that is
// not a version-1 report with a headroom in [0, 1] and fields in range.
func ParseLoad(v []byte) (r LoadReport, ok bool) {
	if len(v) == 0 || len(v) > MaxLoadHeader {
		return r, false
	}
	r = LoadReport{Headroom: -1, CPU: -1, Mem: -1, LatencyMs: -1}
	var seen uint8
	for i := 0; len(v) > 0; i++ {
		if i == maxLoadFields {
			return r, false
		}
		var field []byte
		field, v = cutByte(v, ';')
		field = trimSpace(field)
		key, val, found := cutByteOK(field, '=')
		if !found || len(key) == 0 {
			return r, false
		}
		if i == 0 {
			if string(key) != "v" || string(val) != "1" {
				return r, false
			}
			continue
		}
		var bit uint8
		switch string(key) {
		case "h":
			bit = 1
			r.Headroom, found = parseDecimal(val, 1)
		case "cpu":
			bit = 2
			r.CPU, found = parseDecimal(val, 1)
		case "mem":
			bit = 4
			r.Mem, found = parseDecimal(val, 1)
		case "inflight":
			bit = 8
			var f float64
			f, found = parseDecimal(val, maxInFlight)
			r.InFlight = int64(f)
			found = found && float64(r.InFlight) == f
		case "lat":
			bit = 16
			r.LatencyMs, found = parseDecimal(val, maxLatencyMs)
		case "v":
			return r, false // only first
		default:
			continue // a field of a later sidecar
		}
		if !found || seen&bit != 0 {
			return r, false
		}
		seen |= bit
	}
	if seen&1 == 0 {
		return r, false
	}
	return r, true
}

// parseDecimal reads digits[.digits] (at most 7 integer and 6 fraction
// digits) no larger than limit.
func parseDecimal(b []byte, limit float64) (float64, bool) {
	if len(b) == 0 || len(b) > 14 {
		return 0, false
	}
	var whole, frac, scale float64 = 0, 0, 1
	dot, digits := false, 0
	for _, c := range b {
		switch {
		case c == '.' && !dot && digits > 0:
			dot, digits = true, 0
		case c >= '0' && c <= '9':
			digits++
			if dot {
				if digits > 6 {
					return 0, false
				}
				scale *= 10
				frac = frac*10 + float64(c-'0')
			} else {
				if digits > 7 {
					return 0, false
				}
				whole = whole*10 + float64(c-'0')
			}
		default:
			return 0, false
		}
	}
	if digits == 0 {
		return 0, false
	}
	f := whole + frac/scale
	return f, f <= limit
}

func cutByte(b []byte, sep byte) (before, after []byte) {
	before, after, _ = cutByteOK(b, sep)
	return before, after
}

func cutByteOK(b []byte, sep byte) (before, after []byte, found bool) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func clamp01(f float64) float64 {
	if !(f > 0) { // NaN too
		return 0
	}
	return min(f, 1)
}

// pack keeps a report in one word for Endpoint's atomic: headroom, CPU and
// memory in units of 1/10000 (14 bits each, 16383 = unknown), in-flight in
// 20 bits, and bit 63 set so that a report is never 0. Latency is not kept:
// callers measure their own.
func (r LoadReport) pack() uint64 {
	q := func(f float64) uint64 {
		if f < 0 {
			return unknown14
		}
		return uint64(math.Round(clamp01(f) * 10000))
	}
	return 1<<63 | q(r.Headroom) | q(r.CPU)<<14 | q(r.Mem)<<28 | uint64(min(max(r.InFlight, 0), maxInFlight))<<42
}

const unknown14 = 1<<14 - 1

func unpackLoad(p uint64) LoadReport {
	f := func(v uint64) float64 {
		if v == unknown14 {
			return -1
		}
		return float64(v) / 10000
	}
	return LoadReport{Headroom: f(p & unknown14), CPU: f(p >> 14 & unknown14), Mem: f(p >> 28 & unknown14),
		InFlight: int64(p >> 42 & maxInFlight), LatencyMs: -1}
}
