package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/route"
)

// explain answers "where would this request go, and why": it compiles the
// service's TrafficPolicy and Route from the control plane exactly as a
// sidecar does and runs the request's method, path and headers through
// the Route's rules.
func newExplainCmd() *cobra.Command {
	var path, method, sidecar string
	var headers []string
	cmd := &cobra.Command{
		Use:   "explain SERVICE",
		Short: "Which route rule, subset, policy and instances a request to SERVICE would get, and why",
		Example: `  weft explain orders --path /api/v1 --header x-canary=1
  weft explain orders --sidecar http://127.0.0.1:15020   # with the ejections that calling sidecar made`,
		Args: cobra.ExactArgs(1),
	}
	server := serverFlag(cmd)
	cmd.Flags().StringVar(&path, "path", "/", "the request's path (and query)")
	cmd.Flags().StringVar(&method, "method", "GET", "the request's method")
	cmd.Flags().StringArrayVar(&headers, "header", nil, "a request header K=V (repeatable)")
	cmd.Flags().StringVar(&sidecar, "sidecar", "", "admin URL of a calling sidecar, to show the instances it ejected")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		service := args[0]
		if err := resource.ValidateName(service); err != nil {
			return fmt.Errorf("service: %w", err)
		}
		if !strings.HasPrefix(path, "/") {
			return fmt.Errorf("--path %q: a path starts with /", path)
		}
		q := explainReq{method: strings.ToUpper(method), path: path, hdr: map[string]string{}}
		for _, h := range headers {
			k, v, ok := strings.Cut(h, "=")
			if !ok || k == "" {
				return fmt.Errorf("--header %q: want NAME=VALUE", h)
			}
			q.hdr[strings.ToLower(k)] = v
		}
		c, err := apiclient.New(*server)
		if err != nil {
			return err
		}
		svcs, err := c.Services(cmd.Context())
		if err != nil {
			return err
		}
		objs, err := c.Resources(cmd.Context())
		if err != nil {
			return err
		}
		var ejected []policy.Ejection
		if sidecar != "" {
			if ejected, err = sidecarEjections(sidecar, service); err != nil {
				return err
			}
		}
		return explain(cmd.OutOrStdout(), service, q, svcs, objs, ejected)
	}
	return cmd
}

type explainReq struct {
	method, path string
	hdr          map[string]string
}

func (r explainReq) Method() string            { return r.method }
func (r explainReq) Path() string              { return r.path }
func (r explainReq) Header(name string) string { return r.hdr[strings.ToLower(name)] }

func explain(w io.Writer, service string, q explainReq, svcs control.ServicesJSON, objs control.ResourcesJSON, ejected []policy.Ejection) error {
	var insts []control.InstanceJSON
	found := false
	for _, s := range svcs.Services {
		if s.Name == service {
			insts, found = s.Instances, true
		}
	}
	if !found {
		return fmt.Errorf("no service %q is registered with the control plane", service)
	}
	var tp *resource.TrafficPolicySpec
	var rt *resource.RouteSpec
	tpName, rtName := "", ""
	for _, o := range objs.Items {
		if o.Service() != service {
			continue
		}
		switch o.Kind {
		case resource.KindTrafficPolicy:
			s, err := resource.ParseTrafficPolicySpec(o.Spec)
			if err == nil {
				tp, tpName = &s, o.Metadata.Name
			}
		case resource.KindRoute:
			s, err := resource.ParseRouteSpec(o.Spec)
			if err == nil {
				rt, rtName = &s, o.Metadata.Name
			}
		}
	}
	pol := policy.Compile(tp, policy.NewLive())
	alg := resource.DefaultAlgorithm
	if tp != nil {
		alg = tp.Algorithm()
	}
	b, err := balancer.Get(alg)
	if err != nil {
		return err
	}
	isEjected := map[string]string{}
	for _, e := range ejected {
		isEjected[e.ID] = e.Reason
	}
	var eps []*balancer.Endpoint
	version := map[*balancer.Endpoint]string{}
	ready := 0
	for _, in := range insts {
		if in.Ready {
			ready++
			if _, out := isEjected[in.ID]; !out {
				ep := &balancer.Endpoint{ID: in.ID, Address: in.Address, Labels: in.Labels, Zone: in.Zone}
				eps = append(eps, ep)
				version[ep] = in.Version
			}
		}
	}
	fmt.Fprintf(w, "service %s: %d instance(s), %d ready\n", service, len(insts), ready)
	if tp == nil {
		fmt.Fprintf(w, "policy: none (defaults): %s\n", describePolicy(alg, pol))
	} else {
		fmt.Fprintf(w, "policy: TrafficPolicy/%s: %s\n", tpName, describePolicy(alg, pol))
	}
	subset := map[string]bool{}
	inSubset := ""
	switch {
	case rt == nil:
		fmt.Fprintln(w, "route: none: every ready instance")
	default:
		tab := route.Compile(rtName, rt, eps, func(ep *balancer.Endpoint) string { return version[ep] },
			func(eps []*balancer.Endpoint) balancer.Picker { return balancer.Build(b, eps, balancer.BuildOptions{}) }, pol)
		rule := tab.Match(q)
		if rule == nil {
			fmt.Fprintf(w, "route: Route/%s: no rule matches %s %s: every ready instance\n", rtName, q.method, q.path)
			break
		}
		m, _ := json.Marshal(rt.Rules[rule.Index].Match)
		if rt.Rules[rule.Index].Match == nil {
			m = []byte("every request")
		}
		fmt.Fprintf(w, "route: Route/%s rule %d matches (%s)\n", rtName, rule.Index, m)
		if rule.Policy != nil {
			fmt.Fprintf(w, "  the rule's policy: %s\n", describePolicy(alg, rule.Policy))
		}
		if len(rule.Backends) > 0 {
			total := 0
			for _, be := range rule.Backends {
				total += be.Weight
			}
			for _, be := range rule.Backends {
				fmt.Fprintf(w, "  subset %s: weight %d of %d (%.0f%%), %d instance(s)\n", be.Subset, be.Weight, total, 100*float64(be.Weight)/float64(total), len(be.Endpoints))
				for _, ep := range be.Endpoints {
					subset[ep.ID] = true
				}
			}
			inSubset = "in the rule's subsets"
		}
		if mi := rule.Mirror; mi != nil {
			fmt.Fprintf(w, "  mirror: %.0f%% copied to subset %s (%d instance(s))\n", mi.Percent, mi.Subset, len(mi.Endpoints))
		}
		if d := rule.Delay; d != nil {
			fmt.Fprintf(w, "  fault: %.0f%% delayed %s\n", d.Percent, d.Fixed)
		}
		if a := rule.Abort; a != nil {
			fmt.Fprintf(w, "  fault: %.0f%% aborted with %d (fault_injected)\n", a.Percent, a.Status)
		}
	}
	fmt.Fprintln(w, "instances:")
	slices.SortFunc(insts, func(a, b control.InstanceJSON) int { return strings.Compare(a.ID, b.ID) })
	for _, in := range insts {
		why := "may serve it"
		switch {
		case !in.Ready:
			why = "not ready"
		case isEjected[in.ID] != "":
			why = "ejected by the calling sidecar: " + isEjected[in.ID]
		case inSubset != "" && !subset[in.ID]:
			why = "not " + inSubset
		}
		v := in.Version
		if v == "" {
			v = "-"
		}
		fmt.Fprintf(w, "  %-24s %-21s version %-8s %s\n", in.ID, in.Address, v, why)
	}
	return nil
}

func describePolicy(alg string, p *policy.Policy) string {
	parts := []string{alg, "timeout " + p.Timeout.String()}
	if p.PerTryTimeout > 0 {
		parts = append(parts, "per-try "+p.PerTryTimeout.String())
	}
	if p.Retries > 0 {
		parts = append(parts, fmt.Sprintf("%d retries (budget %.0f%% + %d/s)", p.Retries, 100*p.BudgetRatio, p.BudgetPerSecond))
	} else {
		parts = append(parts, "no retries but a refused connection")
	}
	if p.Outlier != nil {
		parts = append(parts, "outlier detection")
	}
	if p.MaxRequests > 0 || p.MaxConnections > 0 || p.MaxPending > 0 {
		parts = append(parts, fmt.Sprintf("breaker (requests %d, connections %d, pending %d; 0 = no limit)", p.MaxRequests, p.MaxConnections, p.MaxPending))
	}
	return strings.Join(parts, ", ")
}

// sidecarEjections reads a sidecar's GET /outliers for service.
func sidecarEjections(admin, service string) ([]policy.Ejection, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(strings.TrimRight(admin, "/") + "/outliers")
	if err != nil {
		return nil, fmt.Errorf("--sidecar %s: %w", admin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("--sidecar %s: GET /outliers: %s", admin, resp.Status)
	}
	var vs []struct {
		Service string            `json:"service"`
		Ejected []policy.Ejection `json:"ejected"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&vs); err != nil {
		return nil, fmt.Errorf("--sidecar %s: GET /outliers: %w", admin, err)
	}
	for _, v := range vs {
		if v.Service == service {
			return v.Ejected, nil
		}
	}
	return nil, nil
}
