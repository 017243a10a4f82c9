package control

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/weftmesh/weft/dashboard"
)

// What the dashboard needs beyond the CLI's API: a per-interval series of
// one service's golden metrics (its plots), and the results of the latest
// applies (its Resources page). The dashboard itself is mounted at / and
// /ui/.

// ApplyRecordJSON is one apply or delete the API answered, with its
// outcome. Fields are only ever added.
type (
	ApplyRecordJSON struct {
		At        time.Time     `json:"at"`
		Operation string        `json:"operation"` // apply | delete
		Results   []AppliedJSON `json:"results"`
		Error     string        `json:"error,omitempty"`
	}
	AppliesJSON struct {
		Applies []ApplyRecordJSON `json:"applies"` // newest first
	}
)

const keptApplies = 20

// applyLog keeps the latest applies, newest last.
type applyLog struct {
	mu   sync.Mutex
	list []ApplyRecordJSON
}

func (l *applyLog) record(op string, results []AppliedJSON, err error) {
	r := ApplyRecordJSON{At: time.Now().UTC(), Operation: op, Results: results}
	if r.Results == nil {
		r.Results = []AppliedJSON{}
	}
	if err != nil {
		r.Error = err.Error()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, r)
	if len(l.list) > keptApplies {
		l.list = slices.Delete(l.list, 0, len(l.list)-keptApplies)
	}
}

func (l *applyLog) newestFirst() []ApplyRecordJSON {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.list)
	slices.Reverse(out)
	if out == nil {
		out = []ApplyRecordJSON{}
	}
	return out
}

// dashboardRoutes mounts the dashboard and the API it adds.
func (s *Server) dashboardRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/series", s.getSeries)
	mux.HandleFunc("GET /api/v1/applies", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, AppliesJSON{Applies: s.applies.newestFirst()})
	})
	dashboard.Register(mux)
}

// getSeries answers ?service= (required) over ?window= (default 15m).
func (s *Server) getSeries(w http.ResponseWriter, r *http.Request) {
	svc := r.URL.Query().Get("service")
	if svc == "" || len(svc) > 63 {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("service %q: want a service name (1 to 63 characters), as in ?service=orders", svc))
		return
	}
	d := maxStatsWindow
	if r.URL.Query().Get("window") != "" {
		var err error
		if d, err = statsWindow(r); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, s.agg.Series(svc, d))
}
