package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/store"
	"github.com/weftmesh/weft/telemetry/aggregator"
	"github.com/weftmesh/weft/telemetry/tracestore"
	"github.com/weftmesh/weft/version"
)

// The JSON API's wire types. They are the contract `weft get` and users'
// scripts read, so fields are only ever added.
type (
	InstanceJSON struct {
		ID      string            `json:"id"`
		Address string            `json:"address"`
		Ready   bool              `json:"ready"`
		Version string            `json:"version"`
		Labels  map[string]string `json:"labels"`
		Zone    string            `json:"zone,omitempty"`
		// Where the CLI and the app reach the sidecar (-o wide, weft get config).
		Outbound    string `json:"outbound,omitempty"`
		Admin       string `json:"admin,omitempty"`
		WeftVersion string `json:"weftVersion,omitempty"`
		// Load is the instance's last pushed x-weft-load value.
		Load string `json:"load,omitempty"`
		// Ejected lists the callers whose outlier detection ejected this
		// instance, as of the metrics aggregator's last scrape.
		Ejected []EjectedByJSON `json:"ejected,omitempty"`
	}
	EjectedByJSON struct {
		Reason         string `json:"reason"` // consecutive_5xx, consecutive_gateway_errors, success_rate
		CallerService  string `json:"callerService"`
		CallerInstance string `json:"callerInstance"`
	}
	ServiceJSON struct {
		Name      string         `json:"name"`
		Instances []InstanceJSON `json:"instances"`
	}
	ServicesJSON struct {
		Services []ServiceJSON `json:"services"`
	}
	ResourcesJSON struct {
		Items []resource.Object `json:"items"`
	}
	AppliedJSON struct {
		Kind   string `json:"kind"`
		Name   string `json:"name"`
		Result string `json:"result"` // created | configured | unchanged | deleted
	}
	ApplyResultJSON struct {
		Results []AppliedJSON `json:"results"`
	}
	ErrorJSON struct {
		Error string `json:"error"`
	}
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /api/v1/services", s.getServices)
	mux.HandleFunc("GET /api/v1/version", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, version.Get()) })
	mux.HandleFunc("GET /api/v1/resources", s.listResources)
	mux.HandleFunc("GET /api/v1/resources/{kind}", s.listResources)
	mux.HandleFunc("GET /api/v1/resources/{kind}/{name}", s.getResource)
	mux.HandleFunc("PUT /api/v1/resources/{kind}/{name}", s.putResource)
	mux.HandleFunc("DELETE /api/v1/resources/{kind}/{name}", s.deleteResource)
	// Whole manifests, applied or deleted atomically (what `weft apply -f` uses).
	mux.HandleFunc("POST /api/v1/apply", s.applyManifest)
	mux.HandleFunc("POST /api/v1/delete", s.deleteManifest)
	// The embedded telemetry backend: OTLP/HTTP in, stats and traces out.
	mux.Handle("POST /v1/traces", s.receiver)
	mux.HandleFunc("GET /api/v1/stats", s.getStats)
	mux.HandleFunc("GET /api/v1/topology", s.getTopology)
	mux.HandleFunc("GET /api/v1/traces", s.listTraces)
	mux.HandleFunc("GET /api/v1/traces/{traceID}", s.getTrace)
	// Messaging: topics, publish, dead letters.
	s.messagingRoutes(mux)
	// The web dashboard at / and /ui/, and the API only it uses.
	s.dashboardRoutes(mux)
	// Mesh identity: issued certificates, the trust bundle, root rotation.
	s.securityRoutes(mux)
	return s.withAuth(mux)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, ErrorJSON{Error: err.Error()})
}

func (s *Server) getServices(w http.ResponseWriter, r *http.Request) {
	out := ServicesJSON{Services: []ServiceJSON{}}
	var ejected map[string][]aggregator.Ejection
	if s.agg != nil {
		ejected = s.agg.Ejections()
	}
	for _, v := range s.reg.Services() {
		sj := ServiceJSON{Name: v.Name, Instances: []InstanceJSON{}}
		for _, in := range v.Instances {
			labels := in.Labels
			if labels == nil {
				labels = map[string]string{}
			}
			sj.Instances = append(sj.Instances, InstanceJSON{ID: in.Id, Address: in.Address, Ready: in.Ready, Version: in.Version, Labels: labels, Zone: in.Zone,
				Outbound: in.OutboundAddress, Admin: in.AdminAddress, WeftVersion: in.WeftVersion, Load: in.Load})
			for _, e := range ejected[v.Name] {
				if e.Instance == in.Id {
					last := &sj.Instances[len(sj.Instances)-1]
					last.Ejected = append(last.Ejected, EjectedByJSON{Reason: e.Reason, CallerService: e.CallerService, CallerInstance: e.CallerInstance})
				}
			}
		}
		out.Services = append(out.Services, sj)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listResources(w http.ResponseWriter, r *http.Request) {
	objs, err := s.store.List()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	kind := r.PathValue("kind")
	if kind != "" {
		if _, err := resource.LookupKind(kind); err != nil {
			writeErr(w, http.StatusNotFound, err)
			return
		}
	}
	items := []resource.Object{}
	for _, o := range objs {
		if kind == "" || o.Kind == kind {
			items = append(items, o)
		}
	}
	writeJSON(w, http.StatusOK, ResourcesJSON{Items: items})
}

func (s *Server) getResource(w http.ResponseWriter, r *http.Request) {
	objs, err := s.store.List()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	ref := resource.Ref{Kind: r.PathValue("kind"), Name: r.PathValue("name")}
	i := slices.IndexFunc(objs, func(o resource.Object) bool { return o.Ref() == ref })
	if i < 0 {
		writeErr(w, http.StatusNotFound, fmt.Errorf("%s not found", ref))
		return
	}
	writeJSON(w, http.StatusOK, objs[i])
}

func readManifest(w http.ResponseWriter, r *http.Request) ([]resource.Object, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, resource.MaxManifestBytes))
	if err != nil {
		writeErr(w, http.StatusRequestEntityTooLarge, fmt.Errorf("manifest larger than %d bytes", resource.MaxManifestBytes))
		return nil, false
	}
	objs, err := resource.Decode(body)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return nil, false
	}
	return objs, true
}

func (s *Server) putResource(w http.ResponseWriter, r *http.Request) {
	objs, ok := readManifest(w, r)
	if !ok {
		return
	}
	ref := resource.Ref{Kind: r.PathValue("kind"), Name: r.PathValue("name")}
	if len(objs) != 1 || objs[0].Ref() != ref {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("body must hold exactly one object, %s", ref))
		return
	}
	s.apply(w, objs)
}

func (s *Server) applyManifest(w http.ResponseWriter, r *http.Request) {
	if objs, ok := readManifest(w, r); ok {
		s.apply(w, objs)
	}
}

// apply validates the would-be state as a whole, writes it in one
// transaction, then pushes the new policies: never half a manifest.
func (s *Server) apply(w http.ResponseWriter, objs []resource.Object) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next []resource.Object
	results, err := s.store.Apply(objs, func(all []resource.Object) error {
		next = all
		return resource.CheckConflicts(s.withExternal(all))
	})
	if err != nil {
		s.applies.record("apply", nil, err)
		writeErr(w, http.StatusConflict, err)
		return
	}
	next = s.withExternal(next)
	s.reg.SetConfig(serviceConfig(next))
	s.messagingConfig(next)
	out := ApplyResultJSON{}
	for i, o := range objs {
		out.Results = append(out.Results, AppliedJSON{Kind: o.Kind, Name: o.Metadata.Name, Result: results[i]})
		s.log.Info("resource applied", "kind", o.Kind, "name", o.Metadata.Name, "result", results[i])
	}
	s.applies.record("apply", out.Results, nil)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteResource(w http.ResponseWriter, r *http.Request) {
	s.delete(w, []resource.Ref{{Kind: r.PathValue("kind"), Name: r.PathValue("name")}})
}

func (s *Server) deleteManifest(w http.ResponseWriter, r *http.Request) {
	objs, ok := readManifest(w, r)
	if !ok {
		return
	}
	refs := make([]resource.Ref, len(objs))
	for i := range objs {
		refs[i] = objs[i].Ref()
	}
	s.delete(w, refs)
}

func (s *Server) delete(w http.ResponseWriter, refs []resource.Ref) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.store.Delete(refs); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, store.ErrNotFound) {
			code = http.StatusNotFound
		}
		s.applies.record("delete", nil, err)
		writeErr(w, code, err)
		return
	}
	objs, err := s.store.List()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	objs = s.withExternal(objs)
	s.reg.SetConfig(serviceConfig(objs))
	s.messagingConfig(objs)
	out := ApplyResultJSON{}
	for _, r := range refs {
		out.Results = append(out.Results, AppliedJSON{Kind: r.Kind, Name: r.Name, Result: "deleted"})
		s.log.Info("resource deleted", "ref", r.String())
	}
	s.applies.record("delete", out.Results, nil)
	writeJSON(w, http.StatusOK, out)
}

// Telemetry views. ?window= (default 1m, at most the 15 minutes kept) for
// stats and topology; ?service= and ?limit= (default 20, at most 1000) for
// the trace list.
const (
	defaultStatsWindow = time.Minute
	maxStatsWindow     = 15 * time.Minute
	maxTraceList       = 1000
)

func statsWindow(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("window")
	if v == "" {
		return defaultStatsWindow, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > maxStatsWindow {
		return 0, fmt.Errorf("window %q: want a duration from 1s to %s, such as 1m", v, maxStatsWindow)
	}
	return d, nil
}

func (s *Server) getStats(w http.ResponseWriter, r *http.Request) {
	d, err := statsWindow(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, s.agg.Stats(d))
}

func (s *Server) getTopology(w http.ResponseWriter, r *http.Request) {
	d, err := statsWindow(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, s.agg.Topology(d))
}

func (s *Server) listTraces(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxTraceList {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("limit %q: want 1 to %d", v, maxTraceList))
			return
		}
		limit = n
	}
	writeJSON(w, http.StatusOK, s.traces.List(q.Get("service"), limit))
}

func (s *Server) getTrace(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("traceID")
	if _, ok := tracestore.ParseTraceID(id); !ok {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("trace id %q: want 32 hex digits", id))
		return
	}
	t, ok := s.traces.Get(id)
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Errorf("trace %s not found (the store keeps the most recent traces only)", id))
		return
	}
	writeJSON(w, http.StatusOK, t)
}
