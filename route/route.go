// Package route holds a destination's compiled Route: its rules with their
// matchers (regular expressions compiled once), the weighted subsets each
// rule sends to (each with its own ready-built balancer Picker over the
// subset's endpoints), fault injection and the rule's own policy. discovery
// builds a Table into every Destination snapshot; the request pipeline's
// route stage matches a request against it with no lock and no
// allocation.
package route

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/resource"
)

// Request is what matching needs of a request.
type Request interface {
	Method() string
	Path() string
	Header(name string) string
}

// Table is a destination's compiled Route. Immutable.
type Table struct {
	Name  string // the Route's metadata.name
	Rules []Rule
}

// Rule is one compiled rule.
type Rule struct {
	Index    int
	match    matcher
	Backends []Backend
	total    int
	// Policy is the destination's policy with the rule's timeout and
	// retries; nil when the rule sets neither.
	Policy *policy.Policy
	Delay  *Delay
	Abort  *Abort
	Mirror *Mirror
	// RateLimit is the rule's per-instance rate limit (the destination's
	// inbound sidecars enforce it); nil: the TrafficPolicy's.
	RateLimit *resource.RateLimit
}

// Mirror is where a rule's copies go.
type Mirror struct {
	Backend
	Percent float64
}

// Backend is one weighted subset with its picker.
type Backend struct {
	Subset    string
	Weight    int
	Endpoints []*balancer.Endpoint
	Picker    balancer.Picker
}

// Delay and Abort are a rule's faults.
type Delay struct {
	Percent float64
	Fixed   time.Duration
}

type Abort struct {
	Percent float64
	Status  int
}

type matcher struct {
	method  string
	path    *strMatch
	headers []headerMatch
}

type strMatch struct {
	exact, prefix string
	re            *regexp.Regexp
}

func (m *strMatch) match(v string) bool {
	switch {
	case m.re != nil:
		return m.re.MatchString(v)
	case m.prefix != "":
		return strings.HasPrefix(v, m.prefix)
	}
	return v == m.exact
}

type headerMatch struct {
	name    string
	present bool
	m       strMatch
}

func compileStr(exact, prefix, re string) strMatch {
	m := strMatch{exact: exact, prefix: prefix}
	if re != "" {
		// Anchored: the regex matches the whole value, as Envoy's and
		// Istio's do.
		m.re = regexp.MustCompile("^(?:" + re + ")$")
	}
	return m
}

// Compile builds the table for a validated spec over the destination's
// ready endpoints. labels returns an endpoint's labels and version; pick
// builds a picker for a subset's endpoints; base is the destination's
// policy, which a rule's timeout and retries override.
func Compile(name string, spec *resource.RouteSpec, eps []*balancer.Endpoint, version func(*balancer.Endpoint) string,
	pick func([]*balancer.Endpoint) balancer.Picker, base *policy.Policy) *Table {
	subsets := map[string][]*balancer.Endpoint{}
	for _, s := range spec.Subsets {
		var in []*balancer.Endpoint
		for _, ep := range eps {
			if s.Matches(ep.Labels, version(ep)) {
				in = append(in, ep)
			}
		}
		subsets[s.Name] = in
	}
	t := &Table{Name: name}
	for i, r := range spec.Rules {
		cr := Rule{Index: i}
		if m := r.Match; m != nil {
			cr.match.method = m.Method
			if p := m.Path; p != nil {
				sm := compileStr(p.Exact, p.Prefix, p.Regex)
				cr.match.path = &sm
			}
			for _, h := range m.Headers {
				cr.match.headers = append(cr.match.headers, headerMatch{name: h.Name, present: h.Present, m: compileStr(h.Exact, h.Prefix, h.Regex)})
			}
		}
		for _, b := range r.Backends {
			be := Backend{Subset: b.Subset, Weight: b.Weight, Endpoints: subsets[b.Subset]}
			if len(be.Endpoints) > 0 {
				be.Picker = pick(be.Endpoints)
			} else {
				be.Picker = balancer.Empty()
			}
			cr.total += b.Weight
			cr.Backends = append(cr.Backends, be)
		}
		if m := r.Mirror; m != nil {
			mb := Backend{Subset: m.Subset, Endpoints: subsets[m.Subset], Picker: balancer.Empty()}
			if len(mb.Endpoints) > 0 {
				mb.Picker = pick(mb.Endpoints)
			}
			cr.Mirror = &Mirror{Backend: mb, Percent: m.Percent}
		}
		if f := r.Fault; f != nil {
			if d := f.Delay; d != nil {
				fixed, _ := time.ParseDuration(d.Fixed)
				cr.Delay = &Delay{Percent: d.Percent, Fixed: fixed}
			}
			if a := f.Abort; a != nil {
				cr.Abort = &Abort{Percent: a.Percent, Status: a.Status}
			}
		}
		cr.RateLimit = r.RateLimit
		if r.Timeout != "" || r.Retries != nil {
			cr.Policy = base.With(r.Timeout, r.Retries)
		}
		t.Rules = append(t.Rules, cr)
	}
	return t
}

// RateLimited reports whether a rule sets a rate limit.
func (t *Table) RateLimited() bool {
	for i := range t.Rules {
		if t.Rules[i].RateLimit != nil {
			return true
		}
	}
	return false
}

// Match returns the first rule whose match holds, or nil.
func (t *Table) Match(r Request) *Rule {
	for i := range t.Rules {
		if t.Rules[i].matches(r) {
			return &t.Rules[i]
		}
	}
	return nil
}

func (r *Rule) matches(q Request) bool {
	m := &r.match
	if m.method != "" && q.Method() != m.method {
		return false
	}
	if m.path != nil {
		p := q.Path()
		if i := strings.IndexByte(p, '?'); i >= 0 {
			p = p[:i]
		}
		if !m.path.match(p) {
			return false
		}
	}
	for i := range m.headers {
		h := &m.headers[i]
		v := q.Header(h.name)
		if h.present {
			if v == "" {
				return false
			}
			continue
		}
		if v == "" || !h.m.match(v) {
			return false
		}
	}
	return true
}

// Backend picks a weighted backend (nil when the rule has none: every
// instance). A request with a hash key (info.HasHash) takes the backend
// its key falls in on the cumulative weight range, so a key stays with its
// subset — and, the subset's picker hashing the same key, with its
// instance — and a weight change moves only the keys of the part of the
// range that changed hands (50/50 → 60/40 moves 10%). Without a key the
// backend is random by weight.
func (r *Rule) Backend(info balancer.PickInfo) *Backend {
	if len(r.Backends) == 0 {
		return nil
	}
	if len(r.Backends) == 1 {
		return &r.Backends[0]
	}
	var n int
	if info.HasHash {
		n = Spot(info.Hash, r.total)
	} else {
		n = rand.IntN(r.total)
	}
	for i := range r.Backends {
		if n < r.Backends[i].Weight {
			return &r.Backends[i]
		}
		n -= r.Backends[i].Weight
	}
	return &r.Backends[len(r.Backends)-1]
}

// Spot maps a key's hash onto [0, total), keeping order: the same
// fraction of the range whatever total is. The hash is remixed first
// (splitmix64's finalizer) so that the keys of one subset are not the keys
// of one half of the hash space, which the subset's ring would then use
// unevenly.
func Spot(hash uint64, total int) int {
	h := hash ^ 0x9e3779b97f4a7c15
	h = (h ^ h>>30) * 0xbf58476d1ce4e5b9
	h = (h ^ h>>27) * 0x94d049bb133111eb
	h ^= h >> 31
	return int(uint64(total) * (h >> 32) >> 32)
}

// Roll reports true for percent% of calls.
func Roll(percent float64) bool {
	return percent >= 100 || (percent > 0 && rand.Float64()*100 < percent)
}
