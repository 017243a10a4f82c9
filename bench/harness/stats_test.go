package harness

import (
	"encoding/json"
	"math"
	"testing"
)

func TestMedianSpread(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		in   []float64
		want Stat
	}{
		{name: "one", in: []float64{2}, want: Stat{Median: 2, Min: 2, Max: 2, N: 1}},
		{name: "odd unsorted", in: []float64{3, 1, 2}, want: Stat{Median: 2, Min: 1, Max: 3, N: 3}},
		{name: "even averages the middle", in: []float64{4, 1, 3, 2}, want: Stat{Median: 2.5, Min: 1, Max: 4, N: 4}},
		{name: "NaNs ignored", in: []float64{nan, 5, nan, 1, 3}, want: Stat{Median: 3, Min: 1, Max: 5, N: 3}},
		{name: "negative values", in: []float64{-0.2, 0.1, -0.05}, want: Stat{Median: -0.05, Min: -0.2, Max: 0.1, N: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MedianSpread(tt.in)
			if got != tt.want {
				t.Fatalf("MedianSpread(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
	for _, in := range [][]float64{nil, {}, {nan, nan}} {
		got := MedianSpread(in)
		if got.Valid() || !math.IsNaN(got.Median) {
			t.Fatalf("MedianSpread(%v) = %+v, want invalid", in, got)
		}
	}
	if hr := (Stat{Median: 5, Min: 4, Max: 7, N: 3}).HalfRange(); hr != 1.5 {
		t.Fatalf("HalfRange = %v, want 1.5", hr)
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name   string
		values []int64 // µs
		want   Latency // ms; compared within the histogram's 0.1%
	}{
		{
			name:   "1..1000 µs",
			values: seq(1, 1000),
			want:   Latency{Count: 1000, Min: 0.001, Mean: 0.5005, P50: 0.5, P90: 0.9, P99: 0.99, P999: 0.999, Max: 1},
		},
		{
			name:   "constant",
			values: []int64{250, 250, 250, 250},
			want:   Latency{Count: 4, Min: 0.25, Mean: 0.25, P50: 0.25, P90: 0.25, P99: 0.25, P999: 0.25, Max: 0.25},
		},
		{
			// One slow request in a thousand shows at p99.9, not at p99.
			name:   "one outlier",
			values: append(repeat(100, 999), 50_000),
			want:   Latency{Count: 1000, Min: 0.1, Mean: (999*0.1 + 50) / 1000, P50: 0.1, P90: 0.1, P99: 0.1, P999: 0.1, Max: 50},
		},
		{
			name:   "two outliers in a thousand reach p99.9",
			values: append(repeat(100, 998), 50_000, 50_000),
			want:   Latency{Count: 1000, Min: 0.1, Mean: (998*0.1 + 100) / 1000, P50: 0.1, P90: 0.1, P99: 0.1, P999: 50, Max: 50},
		},
		{name: "empty", values: nil, want: Latency{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			for _, v := range tt.values {
				if err := h.RecordValue(v); err != nil {
					t.Fatal(err)
				}
			}
			got := Summarize(h)
			if got.Count != tt.want.Count {
				t.Fatalf("Count = %d, want %d", got.Count, tt.want.Count)
			}
			check := func(name string, g, w float64) {
				if math.Abs(g-w) > w*0.001+1e-9 {
					t.Errorf("%s = %v ms, want %v ms (±0.1%%)", name, g, w)
				}
			}
			check("Min", got.Min, tt.want.Min)
			check("Mean", got.Mean, tt.want.Mean)
			check("P50", got.P50, tt.want.P50)
			check("P90", got.P90, tt.want.P90)
			check("P99", got.P99, tt.want.P99)
			check("P99.9", got.P999, tt.want.P999)
			check("Max", got.Max, tt.want.Max)
		})
	}
}

func seq(lo, hi int64) []int64 {
	var out []int64
	for v := lo; v <= hi; v++ {
		out = append(out, v)
	}
	return out
}

func repeat(v int64, n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestRatioAndPerRequest(t *testing.T) {
	nan := math.NaN()
	ratios := []struct {
		a, b, want float64
	}{
		{300, 120, 2.5},
		{0.36, 0.18, 2},
		{1, 0, nan},
		{1, -0.01, nan},
		{nan, 1, nan},
		{1, nan, nan},
	}
	for _, tt := range ratios {
		got := Ratio(tt.a, tt.b)
		if math.IsNaN(tt.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("Ratio(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	added := []struct {
		a, b, want float64
	}{
		{0.40, 0.20, 2},
		{-0.07, 0.20, nan},
		{0, 0.20, nan},
		{0.40, -0.01, nan},
		{nan, 0.2, nan},
	}
	for _, tt := range added {
		got := AddedRatio(tt.a, tt.b)
		if math.IsNaN(tt.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("AddedRatio(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
	per := []struct {
		cpu  float64
		n    int64
		want float64
	}{
		{cpu: 0.6, n: 5000, want: 120},
		{cpu: 1.5, n: 5000, want: 300},
		{cpu: 0, n: 10, want: 0},
		{cpu: 1, n: 0, want: nan},
	}
	for _, tt := range per {
		got := PerRequestMicros(tt.cpu, tt.n)
		if math.IsNaN(tt.want) != math.IsNaN(got) || !math.IsNaN(got) && math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("PerRequestMicros(%v, %d) = %v, want %v", tt.cpu, tt.n, got, tt.want)
		}
	}
}

func TestNumJSON(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{Num(1.5), "1.5"},
		{NaN(), "null"},
		{Num(math.Inf(1)), "null"},
		{Stat{Median: 2, Min: 1, Max: 3, N: 3}, `{"median":2,"min":1,"max":3,"n":3}`},
		{MedianSpread(nil), `{"median":null,"min":null,"max":null,"n":0}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.in)
		if err != nil || string(b) != tt.want {
			t.Errorf("json.Marshal(%v) = %s, %v; want %s", tt.in, b, err, tt.want)
		}
	}
}
