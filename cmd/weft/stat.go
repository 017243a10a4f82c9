package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/telemetry/aggregator"
	"github.com/weftmesh/weft/telemetry/tracestore"
)

// The telemetry commands read the control plane's embedded backend:
// /api/v1/stats (scraped sidecar metrics) and /api/v1/traces (OTLP spans).

func newStatCmd() *cobra.Command {
	var output string
	var window time.Duration
	cmd := &cobra.Command{
		Use:   "stat [SERVICE]",
		Short: "Request rate, success rate and latency per service and per edge, client view and server view",
		Long: `stat shows, for each service and each caller → callee edge, the request
rate, success rate and p50/p95/p99 latency over the last --window, twice:
as the callers' sidecars saw the calls (client view) and as the callee's own
sidecars saw them (server view). The difference between the two is the
network and the mesh; the server view alone is the app and its sidecar.
Numbers come from the control plane, which scrapes every sidecar's /metrics
(every 10 s by default).`,
		Example: `  weft stat
  weft stat orders --window 5m
  weft stat -o json`,
		Args: cobra.MaximumNArgs(1),
	}
	server := serverFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().DurationVar(&window, "window", time.Minute, "how far back to look (at most 15m)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if output != "table" && output != "json" {
			return fmt.Errorf("-o %q: want table or json", output)
		}
		var st aggregator.Stats
		if err := getJSON(cmd.Context(), *server, "/api/v1/stats?window="+url.QueryEscape(window.String()), &st); err != nil {
			return err
		}
		if len(args) == 1 {
			st = filterStats(st, args[0])
		}
		out := cmd.OutOrStdout()
		if output == "json" {
			return printJSON(out, st)
		}
		printStats(out, st)
		return nil
	}
	return cmd
}

func filterStats(st aggregator.Stats, service string) aggregator.Stats {
	svcs, edges := st.Services[:0:0], st.Edges[:0:0]
	for _, s := range st.Services {
		if s.Service == service {
			svcs = append(svcs, s)
		}
	}
	for _, e := range st.Edges {
		if e.Source == service || e.Destination == service {
			edges = append(edges, e)
		}
	}
	st.Services, st.Edges = svcs, edges
	return st
}

func printStats(w io.Writer, st aggregator.Stats) {
	fmt.Fprintf(w, "last %s (%.0fs of data; %d sidecars scraped every %s, %d failed)\n\n",
		st.Window, st.WindowSeconds, st.Scrape.Targets, st.Scrape.Interval, st.Scrape.Failed)
	if len(st.Services) == 0 {
		fmt.Fprintln(w, "no requests in the window (the first numbers appear one scrape interval after traffic starts)")
		return
	}
	defer printEjections(w, st.Services)
	groups := []group{{"", 1}, {"CLIENT VIEW (callers' sidecars)", 5}, {"SERVER VIEW (its own sidecars)", 5}}
	t := &table{groups: groups, head: []string{"SERVICE", "REQ/S", "SUCCESS", "P50", "P95", "P99", "REQ/S", "SUCCESS", "P50", "P95", "P99"}}
	for _, s := range st.Services {
		t.rows = append(t.rows, append(append([]string{s.Service}, viewCells(s.Client)...), viewCells(s.Server)...))
	}
	t.print(w)
	fmt.Fprintln(w)
	groups[0].cols = 2
	t = &table{groups: groups, head: []string{"SOURCE", "DESTINATION", "REQ/S", "SUCCESS", "P50", "P95", "P99", "REQ/S", "SUCCESS", "P50", "P95", "P99"}}
	for _, e := range st.Edges {
		t.rows = append(t.rows, append(append([]string{e.Source, "→ " + e.Destination}, viewCells(e.Client)...), viewCells(e.Server)...))
	}
	t.print(w)
}

// printEjections lists the instances callers' outlier detection has
// ejected now, with why and by whom.
func printEjections(w io.Writer, svcs []aggregator.ServiceStats) {
	t := &table{head: []string{"SERVICE", "INSTANCE", "REASON", "EJECTED BY"}}
	for _, s := range svcs {
		for _, e := range s.Ejected {
			by := e.CallerInstance
			if e.CallerService != "" {
				by = e.CallerService + "/" + e.CallerInstance
			}
			t.rows = append(t.rows, []string{s.Service, e.Instance, e.Reason, by})
		}
	}
	if len(t.rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "EJECTED (by callers' outlier detection, at the last scrape)")
	t.print(w)
}

func viewCells(v *aggregator.View) []string {
	if v == nil {
		return []string{"-", "-", "-", "-", "-"}
	}
	return []string{strconv.FormatFloat(v.RPS, 'f', 1, 64), pct(v.SuccessRate), ms(v.P50Ms), ms(v.P95Ms), ms(v.P99Ms)}
}

func pct(f float64) string { return strconv.FormatFloat(f*100, 'f', 2, 64) + "%" }

// ms formats milliseconds with about three significant digits.
func ms(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + "s"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	default:
		return strconv.FormatFloat(v, 'f', 2, 64) + "ms"
	}
}

func newTopCmd() *cobra.Command {
	var (
		window, every time.Duration
		limit, n      int
		output        string
	)
	cmd := &cobra.Command{
		Use:   "top",
		Short: "A live view of the busiest edges (caller → callee), refreshed every few seconds",
		Example: `  weft top
  weft top --window 1m --limit 10
  weft top -n 1 -o json        # one snapshot, for scripts`,
		Args: cobra.NoArgs,
	}
	server := serverFlag(cmd)
	f := cmd.Flags()
	f.DurationVar(&window, "window", 30*time.Second, "rates over this much recent time")
	f.DurationVar(&every, "interval", 2*time.Second, "refresh every")
	f.IntVar(&limit, "limit", 20, "show at most this many edges")
	f.IntVarP(&n, "iterations", "n", 0, "stop after this many refreshes (0: until Ctrl-C)")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if output != "table" && output != "json" {
			return fmt.Errorf("-o %q: want table or json", output)
		}
		if every < 100*time.Millisecond {
			return fmt.Errorf("--interval %s: at least 100ms", every)
		}
		out := cmd.OutOrStdout()
		clear := output == "table" && isTerminal(out)
		for i := 0; n == 0 || i < n; i++ {
			if i > 0 {
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(every):
				}
			}
			var st aggregator.Stats
			if err := getJSON(cmd.Context(), *server, "/api/v1/stats?window="+url.QueryEscape(window.String()), &st); err != nil {
				if cmd.Context().Err() != nil {
					return nil
				}
				return err
			}
			edges := busiest(st.Edges, limit)
			if output == "json" {
				if err := printJSON(out, edges); err != nil {
					return err
				}
				continue
			}
			if clear {
				fmt.Fprint(out, "\x1b[H\x1b[2J")
			}
			fmt.Fprintf(out, "weft top — %s — busiest edges over the last %s (Ctrl-C to quit)\n\n", time.Now().Format("15:04:05"), st.Window)
			t := &table{groups: []group{{"", 2}, {"CLIENT VIEW", 4}, {"SERVER VIEW", 3}},
				head: []string{"SOURCE", "DESTINATION", "REQ/S", "SUCCESS", "P50", "P99", "SUCCESS", "P50", "P99"}}
			for _, e := range edges {
				c, s := viewCells(e.Client), viewCells(e.Server)
				rps := c[0]
				if e.Client == nil {
					rps = viewCells(e.Server)[0]
				}
				t.rows = append(t.rows, []string{e.Source, "→ " + e.Destination, rps, c[1], c[2], c[4], s[1], s[2], s[4]})
			}
			if len(edges) == 0 {
				fmt.Fprintln(out, "no traffic in the window")
			} else {
				t.print(out)
			}
		}
		return nil
	}
	return cmd
}

// busiest sorts edges by request rate (the caller's view, else the
// callee's), highest first, and keeps limit.
func busiest(edges []aggregator.EdgeStats, limit int) []aggregator.EdgeStats {
	rate := func(e aggregator.EdgeStats) float64 {
		if e.Client != nil {
			return e.Client.RPS
		}
		if e.Server != nil {
			return e.Server.RPS
		}
		return 0
	}
	sort.SliceStable(edges, func(i, j int) bool { return rate(edges[i]) > rate(edges[j]) })
	if limit > 0 && len(edges) > limit {
		edges = edges[:limit]
	}
	return edges
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newTracesCmd() *cobra.Command {
	var (
		service, output string
		limit           int
	)
	cmd := &cobra.Command{
		Use:   "traces",
		Short: "List recent traces (newest first) kept by the control plane",
		Example: `  weft traces
  weft traces --service orders --limit 5
  weft trace 4bf92f3577b34da6a3ce929d0e0e4736`,
		Args: cobra.NoArgs,
	}
	server := serverFlag(cmd)
	cmd.Flags().StringVar(&service, "service", "", "only traces with a span of this service")
	cmd.Flags().IntVar(&limit, "limit", 20, "at most this many traces (1 to 1000)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if output != "table" && output != "json" {
			return fmt.Errorf("-o %q: want table or json", output)
		}
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if service != "" {
			q.Set("service", service)
		}
		var list tracestore.TraceList
		if err := getJSON(cmd.Context(), *server, "/api/v1/traces?"+q.Encode(), &list); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if output == "json" {
			return printJSON(out, list)
		}
		if len(list.Traces) == 0 {
			fmt.Fprintln(out, "no traces (sidecars sample --trace-sampling of new traces, 1% by default; weft demo samples all)")
			return nil
		}
		t := &table{head: []string{"TRACE ID", "START", "DURATION", "SPANS", "ROOT", "SERVICES", "ERROR"}}
		for _, s := range list.Traces {
			errMark := ""
			if s.Error {
				errMark = "error"
			}
			t.rows = append(t.rows, []string{s.TraceID, s.Start.Local().Format("15:04:05.000"), ms(s.DurationMs),
				strconv.Itoa(s.Spans), s.RootService + ": " + s.RootName, strings.Join(s.Services, ","), errMark})
		}
		t.print(out)
		return nil
	}
	return cmd
}

func newTraceCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "trace TRACE_ID",
		Short:   "Show one trace as a tree of spans with their timings",
		Example: "  weft trace 4bf92f3577b34da6a3ce929d0e0e4736",
		Args:    cobra.ExactArgs(1),
	}
	server := serverFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if output != "table" && output != "json" {
			return fmt.Errorf("-o %q: want table or json", output)
		}
		if _, ok := tracestore.ParseTraceID(args[0]); !ok {
			return fmt.Errorf("trace id %q: want 32 hex digits (see weft traces)", args[0])
		}
		var tr tracestore.Trace
		if err := getJSON(cmd.Context(), *server, "/api/v1/traces/"+url.PathEscape(strings.ToLower(args[0])), &tr); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if output == "json" {
			return printJSON(out, tr)
		}
		printTrace(out, tr)
		return nil
	}
	return cmd
}

// printTrace prints the span tree: each span under its parent, children in
// start order, with its offset from the trace's start, its duration and a
// bar placing it on the trace's timeline.
func printTrace(w io.Writer, tr tracestore.Trace) {
	if len(tr.Spans) == 0 {
		fmt.Fprintf(w, "trace %s has no spans\n", tr.TraceID)
		return
	}
	byID := map[string]bool{}
	start, end := tr.Spans[0].Start, time.Time{}
	for _, s := range tr.Spans {
		byID[s.SpanID] = true
		if s.Start.Before(start) {
			start = s.Start
		}
		if e := s.Start.Add(time.Duration(s.DurationMs * float64(time.Millisecond))); e.After(end) {
			end = e
		}
	}
	children := map[string][]int{}
	var roots []int
	for i, s := range tr.Spans {
		if s.ParentSpanID == "" || !byID[s.ParentSpanID] {
			roots = append(roots, i)
			continue
		}
		children[s.ParentSpanID] = append(children[s.ParentSpanID], i)
	}
	total := end.Sub(start)
	fmt.Fprintf(w, "trace %s  %d spans  %s  started %s\n\n", tr.TraceID, len(tr.Spans),
		ms(float64(total)/float64(time.Millisecond)), start.Local().Format("2006-01-02 15:04:05.000"))
	t := &table{head: []string{"SPAN", "SERVICE", "KIND", "START", "DURATION", "STATUS", "TIMELINE"}}
	var walk func(i int, prefix, branch string)
	walk = func(i int, prefix, branch string) {
		s := tr.Spans[i]
		off := float64(s.Start.Sub(start)) / float64(time.Millisecond)
		t.rows = append(t.rows, []string{prefix + branch + s.Name, s.Service, s.Kind, "+" + ms(off), ms(s.DurationMs),
			spanStatus(s), bar(off, s.DurationMs, float64(total)/float64(time.Millisecond), 30)})
		kids := children[s.SpanID]
		sort.SliceStable(kids, func(a, b int) bool { return tr.Spans[kids[a]].Start.Before(tr.Spans[kids[b]].Start) })
		next := prefix
		switch branch {
		case "├─ ":
			next += "│  "
		case "└─ ":
			next += "   "
		}
		for k, c := range kids {
			b := "├─ "
			if k == len(kids)-1 {
				b = "└─ "
			}
			walk(c, next, b)
		}
	}
	sort.SliceStable(roots, func(a, b int) bool { return tr.Spans[roots[a]].Start.Before(tr.Spans[roots[b]].Start) })
	for _, r := range roots {
		walk(r, "", "")
	}
	t.print(w)
}

func spanStatus(s tracestore.Span) string {
	st := ""
	if v, ok := s.Attributes["http.response.status_code"]; ok {
		st = fmt.Sprint(v)
	}
	if v, ok := s.Attributes["rpc.grpc.status_code"]; ok {
		st += " grpc=" + fmt.Sprint(v)
	}
	if v, ok := s.Attributes["weft.error"]; ok {
		st += " " + fmt.Sprint(v)
	} else if s.Status == "error" {
		st += " error"
	}
	return strings.TrimSpace(st)
}

// bar draws [off, off+d] of total on width cells.
func bar(off, d, total float64, width int) string {
	if total <= 0 {
		return ""
	}
	from := int(off / total * float64(width))
	n := int(d/total*float64(width) + 0.5)
	from = min(max(from, 0), width-1)
	n = min(max(n, 1), width-from)
	return strings.Repeat("·", from) + strings.Repeat("█", n) + strings.Repeat("·", width-from-n)
}

// table prints aligned columns, with optional group labels spanning runs
// of columns above the header.
type table struct {
	groups []group
	head   []string
	rows   [][]string
}

type group struct {
	label string
	cols  int
}

const colGap = 2

func (t *table) print(w io.Writer) {
	widths := make([]int, len(t.head))
	for i, h := range t.head {
		widths[i] = utf8.RuneCountInString(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			if i < len(widths) {
				widths[i] = max(widths[i], utf8.RuneCountInString(c))
			}
		}
	}
	// Widen a group's last column if its label is longer than its columns.
	col := 0
	for _, g := range t.groups {
		span := -colGap
		for i := col; i < col+g.cols && i < len(widths); i++ {
			span += widths[i] + colGap
		}
		if extra := utf8.RuneCountInString(g.label) - span; extra > 0 && col+g.cols-1 < len(widths) {
			widths[col+g.cols-1] += extra
		}
		col += g.cols
	}
	var sb strings.Builder
	if len(t.groups) > 0 {
		col = 0
		for _, g := range t.groups {
			span := 0
			for i := col; i < col+g.cols && i < len(widths); i++ {
				span += widths[i] + colGap
			}
			sb.WriteString(pad(g.label, span))
			col += g.cols
		}
		fmt.Fprintln(w, strings.TrimRight(sb.String(), " "))
	}
	line := func(cells []string) {
		sb.Reset()
		for i, c := range cells {
			if i < len(widths) {
				sb.WriteString(pad(c, widths[i]+colGap))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(sb.String(), " "))
	}
	line(t.head)
	for _, r := range t.rows {
		line(r)
	}
}

func pad(s string, n int) string {
	if k := n - utf8.RuneCountInString(s); k > 0 {
		return s + strings.Repeat(" ", k)
	}
	return s
}

// getJSON GETs path from the control plane's API into out.
func getJSON(ctx context.Context, server, path string, out any) error {
	if server == "" {
		server = "http://127.0.0.1:15000"
	}
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--server %q: want a URL such as http://127.0.0.1:15000", server)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	base := strings.TrimSuffix(server, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return err
	}
	apiclient.Authorize(req)
	resp, err := apiclient.HTTPClient(base, 0).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return apiclient.RequestError(base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading answer of %s: %w", base, err)
	}
	if resp.StatusCode/100 != 2 {
		if err := apiclient.StatusError(base, req, resp.StatusCode, data); err != nil {
			return err
		}
		var e control.ErrorJSON
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("control plane answered %s", resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("unreadable answer from %s: %w", base, err)
	}
	return nil
}
