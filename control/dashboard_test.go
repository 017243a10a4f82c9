package control_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/weftmesh/weft/control"
)

func do(t *testing.T, method, u, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const policyNamed = `apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: %s}
spec: {service: orders}
`

// TestDashboardAPI: the dashboard is served next to the API, and the API
// it adds answers: the latest applies (failed ones too), newest first,
// and a service's series.
func TestDashboardAPI(t *testing.T) {
	s := start(t)
	base := "http://" + s.HTTPAddr()
	if code, body := do(t, "GET", base+"/", ""); code != 200 || !strings.Contains(body, "/ui/js/app.js") {
		t.Fatalf("GET /: %d %.80q", code, body)
	}
	if code, _ := do(t, "POST", base+"/api/v1/apply", strings.Replace(policyNamed, "%s", "a", 1)); code != 200 {
		t.Fatalf("apply: %d", code)
	}
	// A second policy for the same service is refused.
	if code, _ := do(t, "POST", base+"/api/v1/apply", strings.Replace(policyNamed, "%s", "b", 1)); code != http.StatusConflict {
		t.Fatalf("conflicting apply: %d, want 409", code)
	}
	if code, _ := do(t, "DELETE", base+"/api/v1/resources/TrafficPolicy/a", ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	code, body := do(t, "GET", base+"/api/v1/applies", "")
	var got control.AppliesJSON
	if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil {
		t.Fatalf("GET /api/v1/applies: %d %v %s", code, err, body)
	}
	if len(got.Applies) != 3 {
		t.Fatalf("%d applies recorded, want 3: %+v", len(got.Applies), got.Applies)
	}
	del, bad, ok := got.Applies[0], got.Applies[1], got.Applies[2]
	if del.Operation != "delete" || len(del.Results) != 1 || del.Results[0].Result != "deleted" {
		t.Errorf("newest: %+v, want the delete", del)
	}
	if bad.Error == "" || len(bad.Results) != 0 {
		t.Errorf("the refused apply: %+v, want its error", bad)
	}
	if ok.Error != "" || len(ok.Results) != 1 || ok.Results[0].Result != "created" || ok.At.IsZero() {
		t.Errorf("oldest: %+v, want TrafficPolicy/a created", ok)
	}

	for _, tt := range []struct {
		query, want string
		code        int
	}{
		{"", "want a service name", 400},
		{"?service=orders&window=1h", "window", 400},
		{"?service=orders", `"points": []`, 200},
		{"?service=orders&window=5m", `"window": "5m0s"`, 200},
	} {
		if code, body := do(t, "GET", base+"/api/v1/series"+tt.query, ""); code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("GET /api/v1/series%s: %d %s, want %d with %q", tt.query, code, body, tt.code, tt.want)
		}
	}
}
