package harness

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Num is a float64 that encodes NaN and ±Inf as JSON null.
type Num float64

// NaN is the "unknown" Num.
func NaN() Num { return Num(math.NaN()) }

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, f, 'g', 6, 64), nil
}

// MarshalJSON encodes a Stat with NaNs as null.
func (s Stat) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Median Num `json:"median"`
		Min    Num `json:"min"`
		Max    Num `json:"max"`
		N      int `json:"n"`
	}{Num(s.Median), Num(s.Min), Num(s.Max), s.N})
}

// SummaryRow is one path at one rate, over rounds.
type SummaryRow struct {
	Path      string `json:"path"`
	Kind      string `json:"kind"`
	Rate      int    `json:"rate"`
	Rounds    int    `json:"rounds"`
	P50       Stat   `json:"p50_ms"`
	P90       Stat   `json:"p90_ms"`
	P99       Stat   `json:"p99_ms"`
	P999      Stat   `json:"p999_ms"`
	AddedP50  Stat   `json:"added_p50_ms"`
	AddedP99  Stat   `json:"added_p99_ms"`
	Achieved  Stat   `json:"achieved_rps"`
	CPUPerReq Stat   `json:"proxy_cpu_us_per_req"`
	CPUUtil   Stat   `json:"proxy_cpu_cores"`
	PerCore   Stat   `json:"rps_per_proxy_core"`         // achieved / proxy cores busy
	HopRSSMiB []Stat `json:"hop_rss_peak_mib,omitempty"` // highest during the run
	HopPSSMiB []Stat `json:"hop_pss_peak_mib,omitempty"`
	AuxCPU    Stat   `json:"aux_cpu_us_per_req"`
	AuxRSSMiB Stat   `json:"aux_rss_mib"`
	AuxPSSMiB Stat   `json:"aux_pss_mib"`
	OK        int64  `json:"ok"`
	Errors    int64  `json:"errors"`
}

// MaxRow is the closed-loop run of one path.
type MaxRow = SummaryRow

// RatioRow compares weft with haproxy and nginx at one rate (ratios of the
// medians; NaN when a side is missing or the denominator is not positive).
type RatioRow struct {
	// Family is the protocol ("http/1.1", "grpc unary", "grpc stream"):
	// each family's weft path is compared with its own haproxy (and nginx).
	Family         string `json:"family,omitempty"`
	Rate           string `json:"rate"`
	CPUVsHAProxy   Num    `json:"cpu_per_req_weft_over_haproxy"`
	CPUVsNginx     Num    `json:"cpu_per_req_weft_over_nginx"`
	AddP50VsHAProx Num    `json:"added_p50_weft_over_haproxy"`
	AddP50VsNginx  Num    `json:"added_p50_weft_over_nginx"`
	AddP99VsHAProx Num    `json:"added_p99_weft_over_haproxy"`
	AddP99VsNginx  Num    `json:"added_p99_weft_over_nginx"`
}

// Finish fills in added latency (vs direct, same round and rate), the
// per-path summaries and the weft ratios.
func Finish(rep *Report) {
	rep.Meta.LoadAvgEnd = loadAvg()
	type key struct {
		round int
		kind  string
		rate  int
	}
	type fkey struct {
		key
		family string
	}
	direct := map[fkey]*RunResult{}
	for _, r := range rep.Runs {
		if f, shape := Family(r.Path); shape == PathDirect {
			direct[fkey{key{r.Round, r.Kind, r.Rate}, f}] = r
		}
	}
	for _, r := range rep.Runs {
		r.AddedP50, r.AddedP99 = NaN(), NaN()
		// Closed-loop runs reach different rates per path: their latencies
		// are not comparable, so nothing is "added" there.
		f, shape := Family(r.Path)
		if r.Kind != KindOpen || shape == PathDirect {
			continue
		}
		if d, ok := direct[fkey{key{r.Round, r.Kind, r.Rate}, f}]; ok && d.OK > 0 && r.OK > 0 {
			r.AddedP50 = Num(r.Latency.P50 - d.Latency.P50)
			r.AddedP99 = Num(r.Latency.P99 - d.Latency.P99)
		}
	}
	rep.Summary, rep.Max = Summaries(rep.Runs, rep.Meta.Paths)
	rep.Ratios = Ratios(rep.Summary, rep.Max)
}

// Summaries groups runs by path and rate and takes medians over rounds.
// Open-model rows come first in path order then rate order; the closed-loop
// rows are returned separately.
func Summaries(runs []*RunResult, pathOrder []string) (open []SummaryRow, closed []MaxRow) {
	type key struct {
		path string
		kind string
		rate int
	}
	groups := map[key][]*RunResult{}
	var keys []key
	for _, r := range runs {
		k := key{r.Path, r.Kind, r.Rate}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], r)
	}
	order := map[string]int{}
	for i, p := range pathOrder {
		order[p] = i
	}
	sort.SliceStable(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if order[a.path] != order[b.path] {
			return order[a.path] < order[b.path]
		}
		return a.rate < b.rate
	})
	for _, k := range keys {
		rs := groups[k]
		row := SummaryRow{Path: k.path, Kind: k.kind, Rate: k.rate, Rounds: len(rs)}
		col := func(f func(*RunResult) float64) Stat {
			vs := make([]float64, 0, len(rs))
			for _, r := range rs {
				vs = append(vs, f(r))
			}
			return MedianSpread(vs)
		}
		row.P50 = col(func(r *RunResult) float64 { return okOr(r, r.Latency.P50) })
		row.P90 = col(func(r *RunResult) float64 { return okOr(r, r.Latency.P90) })
		row.P99 = col(func(r *RunResult) float64 { return okOr(r, r.Latency.P99) })
		row.P999 = col(func(r *RunResult) float64 { return okOr(r, r.Latency.P999) })
		row.AddedP50 = col(func(r *RunResult) float64 { return float64(r.AddedP50) })
		row.AddedP99 = col(func(r *RunResult) float64 { return float64(r.AddedP99) })
		row.Achieved = col(func(r *RunResult) float64 { return r.Achieved })
		row.CPUPerReq = col(func(r *RunResult) float64 { return float64(r.ProxyCPUPerReq) })
		row.CPUUtil = col(func(r *RunResult) float64 { return float64(r.ProxyCPUUtil) })
		row.PerCore = col(func(r *RunResult) float64 {
			u := float64(r.ProxyCPUUtil)
			if math.IsNaN(u) || u <= 0 {
				return math.NaN()
			}
			return r.Achieved / u
		})
		row.AuxCPU = col(func(r *RunResult) float64 { return float64(r.AuxCPUPerReq) })
		row.AuxRSSMiB = col(func(r *RunResult) float64 { return sumMiB(r.AuxRSS) })
		row.AuxPSSMiB = col(func(r *RunResult) float64 { return sumMiB(r.AuxPSS) })
		hops := 0
		for _, r := range rs {
			hops = max(hops, len(r.HopRSSPeak))
		}
		// Memory is reported at its peak during the run.
		for h := 0; h < hops; h++ {
			row.HopRSSMiB = append(row.HopRSSMiB, col(func(r *RunResult) float64 { return hopMiB(r.HopRSSPeak, h) }))
			row.HopPSSMiB = append(row.HopPSSMiB, col(func(r *RunResult) float64 { return hopMiB(r.HopPSSPeak, h) }))
		}
		for _, r := range rs {
			row.OK += r.OK
			row.Errors += r.Errors
		}
		if k.kind == KindOpen {
			open = append(open, row)
		} else {
			closed = append(closed, row)
		}
	}
	return open, closed
}

func okOr(r *RunResult, v float64) float64 {
	if r.Latency.Count == 0 {
		return math.NaN()
	}
	return v
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// hopMiB is hop h's figure in MiB, NaN when absent or unknown (0).
func hopMiB(perHop []int64, h int) float64 {
	if h >= len(perHop) || perHop[h] <= 0 {
		return math.NaN()
	}
	return mib(perHop[h])
}

// sumMiB is the sum over processes in MiB, NaN when there are none.
func sumMiB(perProc map[string]int64) float64 {
	if len(perProc) == 0 {
		return math.NaN()
	}
	var s int64
	for _, v := range perProc {
		s += v
	}
	return mib(s)
}

// Ratios compares weft with haproxy and nginx per rate and for the max run.
func Ratios(open []SummaryRow, closed []MaxRow) []RatioRow {
	find := func(rows []SummaryRow, path string, rate int) *SummaryRow {
		for i := range rows {
			if rows[i].Path == path && rows[i].Rate == rate {
				return &rows[i]
			}
		}
		return nil
	}
	med := func(r *SummaryRow, f func(*SummaryRow) Stat) float64 {
		if r == nil {
			return math.NaN()
		}
		return f(r).Median
	}
	cpu := func(r *SummaryRow) Stat { return r.CPUPerReq }
	a50 := func(r *SummaryRow) Stat { return r.AddedP50 }
	a99 := func(r *SummaryRow) Stat { return r.AddedP99 }
	var out []RatioRow
	for _, fam := range []string{PathWeft, PathGRPCWeft, PathGRPCStreamWeft} {
		family, _ := Family(fam)
		wp, hp, np := fam, pathIn(fam, PathHAProxy), pathIn(fam, PathNginx)
		var rates []int
		for _, r := range open {
			if r.Path == wp {
				rates = append(rates, r.Rate)
			}
		}
		for _, rate := range rates {
			w, h, n := find(open, wp, rate), find(open, hp, rate), find(open, np, rate)
			if h == nil && n == nil {
				continue
			}
			out = append(out, RatioRow{
				Family:         family,
				Rate:           strconv.Itoa(rate),
				CPUVsHAProxy:   Num(Ratio(med(w, cpu), med(h, cpu))),
				CPUVsNginx:     Num(Ratio(med(w, cpu), med(n, cpu))),
				AddP50VsHAProx: Num(AddedRatio(med(w, a50), med(h, a50))),
				AddP50VsNginx:  Num(AddedRatio(med(w, a50), med(n, a50))),
				AddP99VsHAProx: Num(AddedRatio(med(w, a99), med(h, a99))),
				AddP99VsNginx:  Num(AddedRatio(med(w, a99), med(n, a99))),
			})
		}
		if w := find(closed, wp, 0); w != nil {
			h, n := find(closed, hp, 0), find(closed, np, 0)
			if h != nil || n != nil {
				out = append(out, RatioRow{
					Family:         family,
					Rate:           "max",
					CPUVsHAProxy:   Num(Ratio(med(w, cpu), med(h, cpu))),
					CPUVsNginx:     Num(Ratio(med(w, cpu), med(n, cpu))),
					AddP50VsHAProx: NaN(), AddP50VsNginx: NaN(),
					AddP99VsHAProx: NaN(), AddP99VsNginx: NaN(),
				})
			}
		}
	}
	return out
}

// WriteJSON writes the report to path, creating its directory.
func WriteJSON(rep *Report, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// fmtStat prints "median ±halfrange" with the given decimals, "–" if unknown.
func fmtStat(s Stat, dec int, spread bool) string {
	if !s.Valid() || math.IsNaN(s.Median) {
		return "–"
	}
	v := strconv.FormatFloat(s.Median, 'f', dec, 64)
	if spread && s.N > 1 {
		v += " ±" + strconv.FormatFloat(s.HalfRange(), 'f', dec, 64)
	}
	return v
}

func fmtNum(n Num, dec int) string {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "–"
	}
	return strconv.FormatFloat(f, 'f', dec, 64)
}

func fmtRSS(ss []Stat) string {
	if len(ss) == 0 {
		return "–"
	}
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = fmtStat(s, 1, false)
	}
	return strings.Join(parts, " / ")
}

// WriteMarkdown prints the report's tables.
func WriteMarkdown(w io.Writer, rep *Report) {
	m := rep.Meta
	fmt.Fprintf(w, "## meshbench results\n\n")
	fmt.Fprintf(w, "- date: %s\n", m.Date)
	if m.Command != "" {
		fmt.Fprintf(w, "- command: `%s`\n", m.Command)
	}
	fmt.Fprintf(w, "- machine: %d CPUs, %s, Linux %s, %s\n", m.NProc, m.CPUModel, m.Kernel, m.GoVersion)
	if m.HAProxy != "" || m.Nginx != "" {
		fmt.Fprintf(w, "- proxies: %s; %s\n", m.HAProxy, m.Nginx)
	}
	fmt.Fprintf(w, "- placement: %s\n", m.Placement)
	if m.LoadAvgStart != "" {
		fmt.Fprintf(w, "- load average at start / end: %s / %s\n", m.LoadAvgStart, m.LoadAvgEnd)
	}
	fmt.Fprintf(w, "- %d round(s) of %s, %s per run after %s warm-up; %d-byte body, keep-alive; open model timed from the scheduled send\n\n",
		m.Rounds, strings.Join(m.Paths, ", "), m.Duration, m.Warmup, m.BodyBytes)

	if len(rep.Summary) > 0 {
		fmt.Fprintf(w, "### Constant rate (open model): median over rounds ± half the min–max range\n\n")
		fmt.Fprintln(w, "| path | rate/s | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms | +p50 ms | +p99 ms | proxy CPU µs/req | RSS MiB per hop | PSS MiB per hop | errors |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|")
		for _, r := range rep.Summary {
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
				r.Path, r.Rate, fmtStat(r.Achieved, 0, false),
				fmtStat(r.P50, 3, true), fmtStat(r.P90, 3, false), fmtStat(r.P99, 3, true), fmtStat(r.P999, 3, false),
				fmtStat(r.AddedP50, 3, true), fmtStat(r.AddedP99, 3, true),
				fmtStat(r.CPUPerReq, 0, true), fmtRSS(r.HopRSSMiB), fmtRSS(r.HopPSSMiB), r.Errors)
		}
		for _, p := range failedOnly(rep) {
			fmt.Fprintf(w, "| %s | – | FAILED (see below) | | | | | | | | | | |\n", p)
		}
		fmt.Fprintln(w)
	}
	if len(rep.Max) > 0 {
		conns := m.MaxConns
		fmt.Fprintf(w, "### Max throughput (closed loop, %d connections)\n\n", conns)
		fmt.Fprintln(w, "| path | req/s | proxy CPU cores busy | req/s per proxy core | proxy CPU µs/req | p50 ms | p99 ms | RSS MiB per hop | PSS MiB per hop | errors |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
		for _, r := range rep.Max {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
				r.Path, fmtStat(r.Achieved, 0, true), fmtStat(r.CPUUtil, 2, false), fmtStat(r.PerCore, 0, true),
				fmtStat(r.CPUPerReq, 0, true), fmtStat(r.P50, 3, false), fmtStat(r.P99, 3, false), fmtRSS(r.HopRSSMiB), fmtRSS(r.HopPSSMiB), r.Errors)
		}
		fmt.Fprintln(w)
	}
	if len(rep.Ratios) > 0 {
		fmt.Fprintf(w, "### weft relative to haproxy and nginx (ratio of medians; >1 = weft costs more)\n\n")
		fmt.Fprintln(w, "| protocol | rate/s | CPU/req ÷ haproxy | CPU/req ÷ nginx | +p50 ÷ haproxy | +p50 ÷ nginx | +p99 ÷ haproxy | +p99 ÷ nginx |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|")
		for _, r := range rep.Ratios {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Family, r.Rate,
				fmtNum(r.CPUVsHAProxy, 2), fmtNum(r.CPUVsNginx, 2),
				fmtNum(r.AddP50VsHAProx, 2), fmtNum(r.AddP50VsNginx, 2),
				fmtNum(r.AddP99VsHAProx, 2), fmtNum(r.AddP99VsNginx, 2))
		}
		fmt.Fprintln(w)
	}
	auxByPath := map[string][]string{}
	var auxPaths []string
	for _, r := range append(append([]SummaryRow{}, rep.Summary...), rep.Max...) {
		if !r.AuxRSSMiB.Valid() {
			continue
		}
		if _, ok := auxByPath[r.Path]; !ok {
			auxPaths = append(auxPaths, r.Path)
		}
		auxByPath[r.Path] = append(auxByPath[r.Path], fmt.Sprintf("%s: %s / %s MiB, %s µs/req",
			rateLabel(r.Kind, r.Rate), fmtStat(r.AuxRSSMiB, 1, false), fmtStat(r.AuxPSSMiB, 1, false), fmtStat(r.AuxCPU, 1, false)))
	}
	for _, p := range auxPaths {
		fmt.Fprintf(w, "%s control plane (not counted as proxy above), RSS / PSS and CPU per request by rate: %s\n\n", p, strings.Join(auxByPath[p], "; "))
	}
	writeIdle(w, rep.Idle)
	if len(rep.Failures) > 0 {
		fmt.Fprintf(w, "### Failed paths\n\n")
		for _, f := range rep.Failures {
			fmt.Fprintf(w, "- round %d, %s: %s\n", f.Round, f.Path, f.Error)
		}
		fmt.Fprintln(w)
	}
}

// failedOnly lists paths that failed and have no measured run at all.
func failedOnly(rep *Report) []string {
	measured := map[string]bool{}
	for _, r := range rep.Runs {
		measured[r.Path] = true
	}
	seen := map[string]bool{}
	var out []string
	for _, f := range rep.Failures {
		if !measured[f.Path] && !seen[f.Path] {
			seen[f.Path] = true
			out = append(out, f.Path)
		}
	}
	return out
}
