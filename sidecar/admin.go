package sidecar

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/policy"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/security/mtls"
	"github.com/weftmesh/weft/telemetry/metrics"
	"github.com/weftmesh/weft/version"
)

// The admin view's wire types (GET /config). Fields are only ever added.
type (
	InstanceView struct {
		ID      string            `json:"id"`
		Service string            `json:"service"`
		Address string            `json:"address"`
		Ready   bool              `json:"ready"`
		Version string            `json:"version,omitempty"`
		Labels  map[string]string `json:"labels,omitempty"`
		Zone    string            `json:"zone,omitempty"`
	}
	DestinationView struct {
		Service   string           `json:"service"`
		Exists    bool             `json:"exists"`
		Version   uint64           `json:"version"`
		Algorithm string           `json:"algorithm"`
		Timeout   string           `json:"timeout"`
		Policy    any              `json:"policy"`
		Instances []InstanceView   `json:"instances"`
		InFlight  map[string]int64 `json:"inFlight"`
		// Endpoints is every instance with the state this sidecar sees it
		// in: "ready" (gets traffic) or "not_ready", and for the ready ones
		// what the balancer knows of them.
		Endpoints []EndpointView `json:"endpoints"`
		// LocalZone: false while requests fail over from this sidecar's
		// zone to the others (see balancer.Build); true otherwise.
		LocalZone bool `json:"localZone"`
		// Config is every applied object configuring the service (its
		// TrafficPolicy, routes, Subscriptions, …), as the control plane sent it.
		Config []ConfigObjectView `json:"config"`
	}
	ConfigObjectView struct {
		Kind       string          `json:"kind"`
		Name       string          `json:"name"`
		Generation int64           `json:"generation"`
		Spec       json.RawMessage `json:"spec,omitempty"`
	}
	ConfigView struct {
		Service      string            `json:"service"`
		ID           string            `json:"id"`
		Instance     *InstanceView     `json:"instance"`
		Control      ControlView       `json:"control"`
		Listeners    map[string]string `json:"listeners"`
		Destinations []DestinationView `json:"destinations"`
		// WeftVersion is this sidecar binary's version.
		WeftVersion string `json:"weftVersion"`
	}
	ControlView struct {
		Address   string `json:"address"`
		Connected bool   `json:"connected"`
		Updates   int64  `json:"updates"`
		// ID and Version of the control plane the latest stream reached.
		ID      string `json:"id,omitempty"`
		Version string `json:"version,omitempty"`
	}
	StatsView struct {
		InboundRequests  int64 `json:"inbound_requests"`
		OutboundRequests int64 `json:"outbound_requests"`
		// Load is the x-weft-load value this instance reports now.
		Load string `json:"load,omitempty"`
	}
)

func view(in *pb.Instance) InstanceView {
	return InstanceView{ID: in.Id, Service: in.Service, Address: in.Address, Ready: in.Ready, Version: in.Version, Labels: in.Labels, Zone: in.Zone}
}

func (s *Sidecar) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /config", s.config)
	mux.HandleFunc("GET /identity", s.id.serveView)
	mux.HandleFunc("GET /stats", s.stats)
	mux.HandleFunc("GET /outliers", s.outliers)
	mux.Handle("GET /metrics", s.metrics.Handler())
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// ready is 200 once the sidecar can do its job: connected to the control
// plane and, for an instance with an app, the app accepting and registered.
func (s *Sidecar) ready(w http.ResponseWriter, r *http.Request) {
	reason := ""
	switch {
	case !s.disc.Connected():
		reason = "not connected to the control plane at " + s.cfg.Control
	case s.inLn != nil:
		// The probe's latest answer, not only the first: an app that stops
		// accepting makes the instance not ready.
		switch in := s.disc.Instance(); {
		case in == nil:
			reason = "deregistered (shutting down)"
		case !in.Ready:
			reason = "app not accepting connections on 127.0.0.1:" + strconv.Itoa(s.cfg.AppPort)
		}
	}
	if reason != "" {
		http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

func (s *Sidecar) config(w http.ResponseWriter, r *http.Request) {
	v := ConfigView{Service: s.cfg.Service, ID: s.cfg.ID,
		Control:      ControlView{Address: s.cfg.Control, Connected: s.disc.Connected(), Updates: s.disc.Updates()},
		Listeners:    map[string]string{"outbound": s.OutboundAddr(), "inbound": s.InboundAddr(), "admin": s.AdminAddr()},
		Destinations: []DestinationView{}, WeftVersion: version.Short()}
	v.Control.ID, v.Control.Version = s.disc.ControlPlane()
	for _, u := range s.upstreams {
		v.Listeners["upstream:"+u.Service] = u.Listener.Addr().String()
	}
	if in := s.disc.Instance(); in != nil {
		iv := view(in)
		v.Instance = &iv
	}
	now := balancer.Mono()
	for _, d := range s.disc.Destinations() {
		if d.Service == resource.TopicPoliciesService {
			continue // the mesh's own config (TopicPolicies), not a service this app calls
		}
		dv := DestinationView{Service: d.Service, Exists: d.Exists, Version: d.Version, Algorithm: d.Algorithm,
			Timeout: d.Timeout.String(), Instances: []InstanceView{}, InFlight: map[string]int64{},
			LocalZone: balancer.LocalUsable(d.Picker)}
		if d.Policy != nil {
			dv.Policy = d.Policy
		}
		for _, in := range d.Instances {
			dv.Instances = append(dv.Instances, view(in))
		}
		ready := map[string]*balancer.Endpoint{}
		for _, ep := range d.Endpoints {
			dv.InFlight[ep.ID] = ep.InFlight.Load()
			ready[ep.ID] = ep
		}
		dv.Endpoints = []EndpointView{}
		for _, in := range d.Instances {
			ev := EndpointView{ID: in.Id, Address: in.Address, State: "not_ready", Zone: in.Zone}
			if ep := ready[in.Id]; ep != nil {
				ev = endpointView(ep, now)
				ev.ID, ev.Address, ev.State = in.Id, in.Address, "ready"
			}
			dv.Endpoints = append(dv.Endpoints, ev)
		}
		dv.Config = []ConfigObjectView{}
		for _, o := range d.Config {
			dv.Config = append(dv.Config, ConfigObjectView{Kind: o.Kind, Name: o.Name, Generation: o.Generation, Spec: json.RawMessage(o.SpecJson)})
		}
		v.Destinations = append(v.Destinations, dv)
	}
	writeJSON(w, v)
}

func (s *Sidecar) stats(w http.ResponseWriter, r *http.Request) {
	v := StatsView{OutboundRequests: s.out.Requests.Load()}
	if s.in != nil {
		v.InboundRequests = s.in.Requests.Load()
	}
	if s.load != nil {
		v.Load = string(s.load.Append(nil))
	}
	writeJSON(w, v)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// OutlierView is one destination's ejected instances (GET /outliers).
type OutlierView struct {
	Service string            `json:"service"`
	Ejected []policy.Ejection `json:"ejected"`
}

// outliers lists, per destination with outlier detection, the instances
// ejected now and why.
func (s *Sidecar) outliers(w http.ResponseWriter, r *http.Request) {
	out := []OutlierView{}
	for _, d := range s.disc.Destinations() {
		if d.Traffic == nil || d.Traffic.Outlier == nil {
			continue
		}
		ej := d.Traffic.Outlier.Ejections()
		if ej == nil {
			ej = []policy.Ejection{}
		}
		out = append(out, OutlierView{Service: d.Service, Ejected: ej})
	}
	writeJSON(w, out)
}

// setEjectedInstances exports dst's ejected instances as the gauge the
// control plane scrapes (weft_outlier_ejected_instance).
func (s *Sidecar) setEjectedInstances(dst string, ej []policy.Ejection) {
	out := make([]metrics.EjectedInstance, len(ej))
	for i, e := range ej {
		out[i] = metrics.EjectedInstance{Instance: e.ID, Reason: e.Code}
	}
	s.metrics.SetEjectedInstances(dst, out)
}

// countSweptEjections counts ejections made by the periodic review
// (success rate) in weft_outlier_ejections_total.
func (s *Sidecar) countSweptEjections(dst string, n int) {
	for range n {
		s.metrics.Count(metrics.EventEjection, metrics.Client, s.cfg.Service, dst)
	}
}

// healthDial connects active health checks to an instance's inbound the
// way requests do (mTLS when the mesh has it).
func (s *Sidecar) healthDial(ctx context.Context, addr string) (net.Conn, error) {
	return s.id.dialer().Dial(ctx, "tcp", addr, mtls.ALPNHTTP1)
}
