package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/weftmesh/weft/apiclient"
	"github.com/weftmesh/weft/control"
)

// TestGetServicesEjected: the table is as before while nothing is ejected,
// and gains an EJECTED column (reason, by which callers) while something is.
func TestGetServicesEjected(t *testing.T) {
	two := func(ej []control.EjectedByJSON) control.ServicesJSON {
		return control.ServicesJSON{Services: []control.ServiceJSON{{Name: "orders", Instances: []control.InstanceJSON{
			{ID: "orders-1", Address: "127.0.0.1:1", Ready: true, Labels: map[string]string{}},
			{ID: "orders-2", Address: "127.0.0.1:2", Ready: true, Labels: map[string]string{}, Ejected: ej},
		}}}}
	}
	for _, tc := range []struct {
		name, output string
		res          control.ServicesJSON
		want         []string // lines, fields joined by one space
	}{
		{"none ejected", "table", two(nil), []string{
			"SERVICE INSTANCE ADDRESS READY VERSION LABELS",
			"orders orders-1 127.0.0.1:1 true - -",
			"orders orders-2 127.0.0.1:2 true - -"}},
		{"one ejected by two callers", "table", two([]control.EjectedByJSON{
			{Reason: "consecutive_5xx", CallerService: "web", CallerInstance: "web-2"},
			{Reason: "success_rate", CallerService: "web", CallerInstance: "web-1"},
			{Reason: "consecutive_5xx", CallerService: "web", CallerInstance: "web-1"}}), []string{
			"SERVICE INSTANCE ADDRESS READY VERSION LABELS EJECTED",
			"orders orders-1 127.0.0.1:1 true - - -",
			"orders orders-2 127.0.0.1:2 true - - consecutive_5xx(by:web-1,web-2),success_rate(by:web-1)"}},
		{"wide", "wide", two([]control.EjectedByJSON{{Reason: "consecutive_gateway_errors", CallerInstance: "web-1"}}), []string{
			"SERVICE INSTANCE ADDRESS READY VERSION LABELS OUTBOUND ADMIN WEFT EJECTED",
			"orders orders-1 127.0.0.1:1 true - - - - - -",
			"orders orders-2 127.0.0.1:2 true - - - - - consecutive_gateway_errors(by:web-1)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewEncoder(w).Encode(tc.res)
			}))
			defer srv.Close()
			c, err := apiclient.New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := getServices(context.Background(), c, tc.output, &out); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
				got = append(got, strings.Join(strings.Fields(l), " "))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}
