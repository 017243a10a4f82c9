// Package dashboard_test checks the control plane's web dashboard the way a
// person would look at it: a real headless Chromium (Debian's chromium,
// driven over the DevTools protocol by chromedp) loads every page from a
// real `weft control`, with real sidecars in front of the demo apps and
// traffic through them, and the test reads what the pages drew — table
// cells, SVG path data, the waterfall's rows — against the JSON API. Every
// page must load with no JavaScript error and no failed request, and each
// is saved as a screenshot under screenshots/ (git-ignored) or
// $WEFT_E2E_ARTIFACTS.
//
// Run: go test -count=1 -v ./test/e2e/dashboard/
package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/weftmesh/weft/test/e2e/harness"
)

const eventually = 20 * time.Second

var bins harness.Binaries

func TestMain(m *testing.M) { os.Exit(harness.Main(m, "./test/e2e/testapp", &bins)) }

// chromium finds the browser: $WEFT_CHROMIUM, else the usual names.
func chromium() (string, error) {
	if p := os.Getenv("WEFT_CHROMIUM"); p != "" {
		return exec.LookPath(p)
	}
	var errs []string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		p, err := exec.LookPath(name)
		if err == nil {
			return p, nil
		}
		errs = append(errs, name)
	}
	return "", fmt.Errorf("none of %s on $PATH", strings.Join(errs, ", "))
}

// ---------------------------------------------------------------- mesh

type unit struct {
	service  string
	adminURL string
	proxy    *url.URL
}

// startUnit runs `weft run` for service with app as its app, or a pure
// client sidecar (`weft sidecar`, not registered) when app is empty.
func startUnit(t testing.TB, c *harness.Control, service string, app ...string) *unit {
	t.Helper()
	admin, out := harness.FreeAddr(t), harness.FreeAddr(t)
	u := &unit{service: service, adminURL: "http://" + admin}
	u.proxy, _ = url.Parse("http://" + out)
	args := []string{"--control", c.GRPCAddr, "--service", service, "--admin", admin, "--outbound", out, "--trace-sampling", "1"}
	var p *harness.Proc
	if len(app) == 0 {
		p = harness.Start(t, service+"-sidecar", bins.Weft, append([]string{"sidecar"}, args...)...)
	} else {
		args = append(append([]string{"run", "--inbound", "127.0.0.1:0"}, args...), "--")
		p = harness.Start(t, service, bins.Weft, append(args, app...)...)
	}
	harness.WaitUp(t, p, u.adminURL+"/ready", eventually)
	return u
}

func getJSON(t testing.TB, u string, out any) {
	t.Helper()
	code, body, err := harness.Get(u)
	if err != nil || code != 200 {
		t.Fatalf("GET %s: %d %v %s", u, code, err, body)
	}
	if err := json.Unmarshal([]byte(body), out); err != nil {
		t.Fatalf("GET %s: %v in %q", u, err, body)
	}
}

func send(t testing.TB, method, u, body string) string {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	resp, err := harness.Client.Do(req) // with the local token, as the CLI
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %s %s", method, u, resp.Status, b)
	}
	return string(b)
}

// ---------------------------------------------------------------- browser

// watch collects what would be a visible failure of a page: uncaught
// exceptions, console errors, browser log errors (CSP violations, failed
// loads) and failed or non-2xx requests.
type watch struct {
	mu       sync.Mutex
	problems []string
	allow    func(url string, status int64) bool // a response a test expects to fail
}

func (w *watch) add(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.problems = append(w.problems, fmt.Sprintf(format, args...))
}

func (w *watch) on(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		w.add("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, msg)
	case *runtime.EventConsoleAPICalled:
		if ev.Type == "error" || ev.Type == "assert" {
			var parts []string
			for _, a := range ev.Args {
				if a.Description != "" {
					parts = append(parts, a.Description)
				} else {
					parts = append(parts, string(a.Value))
				}
			}
			w.add("console.%s: %s", ev.Type, strings.Join(parts, " "))
		}
	case *log.EventEntryAdded:
		if ev.Entry.Level == log.EntryLevelError && !(ev.Entry.Source == log.EntrySourceNetwork && w.allowed(ev.Entry.URL, ev.Entry.Text)) {
			w.add("browser log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		}
	case *network.EventLoadingFailed:
		if !ev.Canceled {
			w.add("request %s failed: %s %s", ev.RequestID, ev.ErrorText, ev.BlockedReason)
		}
	case *network.EventResponseReceived:
		r := ev.Response
		if r.Status >= 400 {
			w.mu.Lock()
			ok := w.allow != nil && w.allow(r.URL, r.Status)
			w.mu.Unlock()
			if !ok {
				w.add("%s answered %d %s", r.URL, r.Status, r.StatusText)
			}
		}
	}
}

// allowed says whether a browser log entry is about a response the test
// expects to fail ("... status of 401 (Unauthorized)").
func (w *watch) allowed(url, text string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.allow == nil {
		return false
	}
	for _, code := range []int64{400, 401, 403, 404, 500, 502, 503} {
		if strings.Contains(text, fmt.Sprintf("status of %d", code)) {
			return w.allow(url, code)
		}
	}
	return false
}

// take returns the problems seen since the last call.
func (w *watch) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.problems
	w.problems = nil
	return p
}

type browser struct {
	ctx   context.Context
	w     *watch
	shots string
}

// newBrowser starts headless Chromium for the test, or skips the test
// when there is none.
func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	exe, err := chromium()
	if err != nil {
		t.Skipf("no Chromium to drive (%v): run scripts/deps.sh, which installs Debian's chromium, or set WEFT_CHROMIUM", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // the tests run as root in CI, where the sandbox cannot start
		chromedp.DisableGPU,
		chromedp.WindowSize(width, height),
		chromedp.Flag("lang", "en-GB"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute) // generous: the machine may be loaded
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })
	b := &browser{ctx: ctx, w: &watch{}, shots: screenshotDir(t)}
	if err := chromedp.Listen(ctx, b.w.on); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	return b
}

// tab opens another tab in b's browser, with its own watch.
func (b *browser) tab(t *testing.T) *browser {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	nb := &browser{ctx: ctx, w: &watch{}, shots: b.shots}
	if err := chromedp.Listen(ctx, nb.w.on); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	return nb
}

func screenshotDir(t *testing.T) string {
	dir := os.Getenv("WEFT_E2E_ARTIFACTS")
	if dir == "" {
		dir = "screenshots"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("screenshot dir: %v", err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

func (b *browser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates js and decodes its result into T.
func eval[T any](t *testing.T, b *browser, js string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// until waits for js to be truthy in the page, up to d.
func until(t *testing.T, b *browser, what, js string, d time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(d))); err != nil {
		alert := eval[string](t, b, `document.getElementById('alert') ? document.getElementById('alert').textContent : ''`)
		main := eval[string](t, b, `(document.querySelector('main') || document.body).innerText.slice(0, 600)`)
		t.Fatalf("waiting for %s (%s): %v; the page's alert: %q; problems: %v; the page says:\n%s", what, js, err, alert, b.w.take(), main)
	}
}

// show goes to a page of the dashboard by its hash route and waits for
// ready (JS) to be truthy.
func (b *browser) show(t *testing.T, hash, ready string) {
	t.Helper()
	b.do(t, "going to "+hash, chromedp.Evaluate[chromedp.Void](`location.hash = `+jsString(hash)))
	until(t, b, hash, ready, eventually)
}

// shot saves a full-page screenshot as name.png.
func (b *browser) shot(t *testing.T, name string) string {
	t.Helper()
	buf, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", p, len(buf))
	return p
}

// view saves a screenshot of what fits in the window, as name.png.
func (b *browser) view(t *testing.T, name string) {
	t.Helper()
	buf, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s (%d bytes)", p, len(buf))
}

// clean fails the test for every problem the page had since the last check.
func (b *browser) clean(t *testing.T, page string) {
	t.Helper()
	// Let requests the page started finish and their events arrive.
	time.Sleep(300 * time.Millisecond)
	for _, p := range b.w.take() {
		t.Errorf("%s page: %s", page, p)
	}
	// Every control has a name a screen reader can say.
	unnamed := eval[[]string](t, b, `[...document.querySelectorAll('input, select, textarea, button, a[href]')].filter(e =>
		!(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).map(e => e.outerHTML.slice(0, 80))`)
	for _, u := range unnamed {
		t.Errorf("%s page: a control without a label or text: %s", page, u)
	}
	for _, c := range eval[[]string](t, b, lowContrast) {
		t.Errorf("%s page: text below 4.5:1 contrast: %s", page, c)
	}
	if alert := eval[string](t, b, `document.getElementById('alert').hidden ? '' : document.getElementById('alert').textContent`); alert != "" {
		t.Errorf("%s page shows an error: %s", page, alert)
	}
}

// lowContrast lists the HTML elements whose own text has less than the
// 4.5:1 contrast against its background that WCAG AA asks of body text.
const lowContrast = `(() => {
	const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
	const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
	const bg = (e) => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c.length === 3 || c[3] > 0.5) return c.slice(0, 3); } return [255, 255, 255]; };
	const out = [];
	for (const e of document.querySelectorAll('body *:not(svg):not(svg *)')) {
		if (![...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim()) || !e.getClientRects().length) continue;
		const st = getComputedStyle(e);
		if (st.visibility === 'hidden' || (e.closest('dialog') && !e.closest('dialog').open)) continue;
		const a = lum(rgb(st.color)), b = lum(bg(e));
		const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
		if (ratio < 4.5) out.push(e.tagName.toLowerCase() + ' "' + e.textContent.trim().slice(0, 30) + '" ' + ratio.toFixed(2) + ':1');
	}
	return out;
})()`

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
