package client

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"
)

// A fake API server (this package's unit test only; the real one is in
// apiserver_test.go): the informer lists, applies watch events, watches
// again from the last version when a watch ends, and lists again on 410.
func TestInformerRelistsOnGone(t *testing.T) {
	backoffMin, backoffMax = 10*time.Millisecond, 50*time.Millisecond
	var mu sync.Mutex
	var lists, watches []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/namespaces/n/configmaps" {
			http.Error(w, "bad path "+r.URL.Path, 404)
			return
		}
		q := r.URL.Query()
		mu.Lock()
		defer mu.Unlock()
		if q.Get("watch") != "1" {
			lists = append(lists, q.Get("limit"))
			if len(lists) == 1 {
				fmt.Fprint(w, `{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"10"},"items":[{"metadata":{"name":"a","namespace":"n","resourceVersion":"9"}}]}`)
			} else {
				fmt.Fprint(w, `{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"30"},"items":[{"metadata":{"name":"c","namespace":"n","resourceVersion":"29"}}]}`)
			}
			return
		}
		if q.Get("allowWatchBookmarks") != "true" {
			http.Error(w, "no bookmarks asked for", 400)
			return
		}
		watches = append(watches, q.Get("resourceVersion"))
		switch len(watches) {
		case 1: // from the list: b added, then a bookmark, then the server ends it
			fmt.Fprint(w, `{"type":"ADDED","object":{"metadata":{"name":"b","namespace":"n","resourceVersion":"11"}}}`+"\n")
			fmt.Fprint(w, `{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"15"}}}`+"\n")
		case 2: // from the bookmark: a deleted, then the version is gone
			fmt.Fprint(w, `{"type":"DELETED","object":{"metadata":{"name":"a","namespace":"n","resourceVersion":"16"}}}`+"\n")
			fmt.Fprint(w, `{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old"}}`+"\n")
		default: // after the relist: stay open
			w.(http.Flusher).Flush()
			mu.Unlock()
			<-r.Context().Done()
			mu.Lock()
		}
	}))
	defer srv.Close()
	c, err := New(&Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	inf := NewInformer(c, Resource{Version: "v1", Resource: "configmaps"}, "n", nil)
	var states []string
	inf.OnChange = func() {
		var names []string
		for _, o := range inf.List() {
			names = append(names, o.Name())
		}
		slices.Sort(names)
		states = append(states, fmt.Sprint(names))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { inf.Run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(watches)
		mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its ctx ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if !inf.HasSynced() {
		t.Error("not synced after a list")
	}
	if fmt.Sprint(watches) != "[10 15 30]" {
		t.Errorf("watched from %v, want [10 15 30]: the list's version, the bookmark's, the relist's", watches)
	}
	if len(lists) != 2 || lists[0] != "500" {
		t.Errorf("lists %v, want two, paged by 500", lists)
	}
	want := "[[a] [a b] [b] [c]]"
	if fmt.Sprint(states) != want {
		t.Errorf("states seen %v, want %s", states, want)
	}
	if o := inf.Get("n", "c"); o == nil || o.APIVersion() != "v1" || o.Kind() != "ConfigMap" {
		t.Errorf("listed object %v: want its apiVersion and kind filled from the list", o)
	}
}

// Resync calls the handler again without a change, so a failed write is
// retried.
func TestInformerResync(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("watch") != "1" {
			fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}`)
			return
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	c, _ := New(&Config{Host: srv.URL})
	inf := NewInformer(c, Resource{Version: "v1", Resource: "pods"}, "", nil)
	inf.Resync = 20 * time.Millisecond
	calls := make(chan struct{}, 1000)
	inf.OnChange = func() { calls <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { inf.Run(ctx); close(done) }()
	for n := range 4 { // the list's call and three resyncs
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d calls of OnChange, want 4 (the list and three resyncs)", n)
		}
	}
	cancel()
	<-done
}
