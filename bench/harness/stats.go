package harness

import (
	"math"
	"sort"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 60 s, with three
// significant digits (0.1% relative error at any magnitude).
const (
	histLowest  = 1
	histHighest = 60_000_000
	histDigits  = 3
)

// NewHistogram returns an empty latency histogram (µs).
func NewHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histDigits)
}

// Latency is a latency summary in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

// Summarize reads the percentiles off a µs histogram, in ms.
func Summarize(h *hdrhistogram.Histogram) Latency {
	if h == nil || h.TotalCount() == 0 {
		return Latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		Min:   ms(h.Min()),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// Stat is a figure over rounds: its median and its spread (min and max).
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// HalfRange is half of max-min, the "±" printed next to a median.
func (s Stat) HalfRange() float64 { return (s.Max - s.Min) / 2 }

// Valid reports whether the Stat has at least one value.
func (s Stat) Valid() bool { return s.N > 0 }

// MedianSpread computes the median, min and max of vs, ignoring NaNs. With
// an even count the median is the mean of the two middle values.
func MedianSpread(vs []float64) Stat {
	xs := make([]float64, 0, len(vs))
	for _, v := range vs {
		if !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return Stat{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	sort.Float64s(xs)
	n := len(xs)
	med := xs[n/2]
	if n%2 == 0 {
		med = (xs[n/2-1] + xs[n/2]) / 2
	}
	return Stat{Median: med, Min: xs[0], Max: xs[n-1], N: n}
}

// Ratio returns a/b, or NaN when either is unknown or b is not positive (a
// ratio of added latencies is meaningless when the denominator adds nothing).
func Ratio(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) || b <= 0 {
		return math.NaN()
	}
	return a / b
}

// AddedRatio is the ratio of two added latencies: NaN unless both are
// positive (an added latency at or below zero is noise larger than the
// proxy's cost, and a ratio of it means nothing).
func AddedRatio(a, b float64) float64 {
	if math.IsNaN(a) || a <= 0 {
		return math.NaN()
	}
	return Ratio(a, b)
}

// PerRequestMicros converts CPU seconds over n requests to µs per request;
// NaN when n is zero.
func PerRequestMicros(cpuSeconds float64, n int64) float64 {
	if n <= 0 {
		return math.NaN()
	}
	return cpuSeconds * 1e6 / float64(n)
}
