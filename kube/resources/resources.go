// Package resources watches Weft's custom resources (weft.dev/v1alpha1, one
// CRD per resource kind, deploy/kubernetes/crds) on a Kubernetes API server
// and feeds them to the control plane through the same validation and
// conflict checks as `weft apply`, then writes each object's Accepted
// condition back to its status: True, or False with the reason (Invalid,
// Conflict) and the message a user would get from weft apply.
//
//	informer per kind ─event─▶ kick ─▶ sync: all objects ─▶ Sink.SetExternal ─▶ registry push
//	                                        └─ per object: Accepted condition ─▶ PATCH …/status
//
// A sync is level-triggered: every event (coalesced) recomputes the whole
// set, so a missed or reordered event cannot leave a stale policy behind.
package resources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/weftmesh/weft/control"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/kube/client"
	"github.com/weftmesh/weft/kube/crd"
	"github.com/weftmesh/weft/resource"
)

// Sink takes the objects found (the control plane).
type Sink interface {
	// SetExternal replaces the external objects; errs[i] says why objs[i]
	// was refused (nil: accepted).
	SetExternal(objs []resource.Object) []error
}

// Condition types and reasons written to status.conditions.
const (
	ConditionAccepted = "Accepted"
	ReasonAccepted    = "Accepted"
	ReasonInvalid     = "Invalid"
	ReasonConflict    = "Conflict"
)

// Options configure a Watcher.
type Options struct {
	Client *client.Client
	Sink   Sink
	// Namespace limits the watch to one namespace ("" for all).
	Namespace string
	Logger    *slog.Logger
}

// Watcher is the running watch of every kind.
type Watcher struct {
	o     Options
	log   *slog.Logger
	kinds []kindInformer
	kick  kube.Kick
}

type kindInformer struct {
	kind string
	gvr  client.Resource
	inf  *client.Informer
}

// New sets up an informer per registered resource kind.
func New(o Options) (*Watcher, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Watcher{o: o, log: o.Logger, kick: kube.NewKick()}
	for _, k := range resource.KindNames() {
		gvr := client.Resource{Group: crd.Group, Version: crd.Version, Resource: crd.Plural(k)}
		inf := kube.Informer(o.Client, gvr, o.Namespace, o.Logger, w.kick.Kick)
		w.kinds = append(w.kinds, kindInformer{kind: k, gvr: gvr, inf: inf})
	}
	return w, nil
}

// Run watches until ctx is done. Until every informer has listed once,
// nothing is handed to the sink, so a half-listed cluster never removes
// policies that exist.
func (w *Watcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, k := range w.kinds {
		wg.Go(func() { k.inf.Run(ctx) })
	}
	if err := w.waitSynced(ctx); err != nil {
		return err
	}
	w.log.Info("kubernetes resources synced", "kinds", len(w.kinds), "namespace", w.o.Namespace)
	w.kick.Kick()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.kick:
			w.sync(ctx)
		}
	}
}

// SyncWait bounds the wait for every kind's first list. A kind whose CRD
// is not installed never lists; after this long the kinds that did list
// are applied, and the others join when their CRD appears.
const SyncWait = 30 * time.Second

// waitSynced waits for every kind's first list, up to SyncWait, saying
// every 10s which kinds are still missing (most often: their CRD is not
// installed).
func (w *Watcher) waitSynced(ctx context.Context) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	warned := start
	for {
		var missing []string
		for _, k := range w.kinds {
			if !k.inf.HasSynced() {
				missing = append(missing, k.kind)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Since(start) >= SyncWait {
			w.log.Warn("kubernetes resources of some kinds not listed; going on without them until their CRD is installed (kubectl apply -f deploy/kubernetes/crds)",
				"kinds", missing)
			return nil
		}
		if time.Since(warned) >= 10*time.Second {
			warned = time.Now()
			w.log.Warn("kubernetes resources not listed yet; is their CRD installed? (kubectl apply -f deploy/kubernetes/crds)",
				"kinds", missing, "waited", time.Since(start).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// item is one custom resource as found.
type item struct {
	u   client.Object
	gvr client.Resource
	obj resource.Object
	err error // conversion error
}

func (w *Watcher) sync(ctx context.Context) {
	var items []item
	for _, k := range w.kinds {
		for _, u := range k.inf.List() {
			obj, err := Convert(u)
			items = append(items, item{u: u, gvr: k.gvr, obj: obj, err: err})
		}
	}
	// A stable order: the oldest object wins a conflict, as the first
	// applied would with weft apply.
	sort.SliceStable(items, func(i, j int) bool {
		a, b := items[i].u, items[j].u
		ta, tb := a.CreationTimestamp(), b.CreationTimestamp()
		if !ta.Equal(tb) {
			return ta.Before(tb)
		}
		return a.Namespace()+"/"+a.Name() < b.Namespace()+"/"+b.Name()
	})
	var objs []resource.Object
	var idx []int
	for i := range items {
		if items[i].err == nil {
			objs = append(objs, items[i].obj)
			idx = append(idx, i)
		}
	}
	errs := w.o.Sink.SetExternal(objs)
	if ctx.Err() != nil {
		// Shutting down: the sink may be closing; write nothing it said.
		return
	}
	for n, i := range idx {
		items[i].err = errs[n]
	}
	for i := range items {
		w.writeStatus(ctx, items[i])
	}
}

// Convert turns a custom resource into the object weft apply would send:
// the namespace is dropped (the mesh has one namespace of names).
func Convert(u client.Object) (resource.Object, error) {
	o := resource.Object{
		APIVersion: u.APIVersion(),
		Kind:       u.Kind(),
		Metadata: resource.Meta{
			Name:        u.Name(),
			Labels:      u.Labels(),
			Annotations: u.Annotations(),
			Generation:  u.Generation(),
		},
	}
	spec, ok := u["spec"]
	if !ok {
		return o, errors.New("spec is missing")
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return o, fmt.Errorf("spec: %w", err)
	}
	o.Spec = b
	return o, nil
}

// writeStatus patches the object's Accepted condition when it differs from
// what is there, so a sync caused by a status write writes nothing.
func (w *Watcher) writeStatus(ctx context.Context, it item) {
	status, reason, msg := "True", ReasonAccepted, "the control plane applied it"
	if it.err != nil {
		status, reason, msg = "False", ReasonInvalid, it.err.Error()
		if errors.Is(it.err, control.ErrConflict) {
			reason = ReasonConflict
		}
	}
	gen := it.u.Generation()
	cur := findCondition(it.u, ConditionAccepted)
	if cur != nil && cur["status"] == status && cur["reason"] == reason && cur["message"] == msg &&
		fmt.Sprint(cur["observedGeneration"]) == fmt.Sprint(gen) {
		return
	}
	lt := time.Now().UTC().Format(time.RFC3339)
	if cur != nil && cur["status"] == status {
		if s, ok := cur["lastTransitionTime"].(string); ok {
			lt = s
		}
	}
	patch := map[string]any{"status": map[string]any{
		"observedGeneration": gen,
		"conditions": []any{map[string]any{
			"type": ConditionAccepted, "status": status, "reason": reason, "message": msg,
			"observedGeneration": gen, "lastTransitionTime": lt,
		}},
	}}
	b, _ := json.Marshal(patch)
	_, err := w.o.Client.Patch(ctx, it.gvr, it.u.Namespace(), it.u.Name(), b, "status")
	if err != nil {
		w.log.Warn("writing status", "kind", it.u.Kind(), "namespace", it.u.Namespace(), "name", it.u.Name(), "err", err)
		return
	}
	if it.err != nil {
		w.log.Info("kubernetes resource refused", "kind", it.u.Kind(), "namespace", it.u.Namespace(), "name", it.u.Name(), "reason", reason, "err", it.err)
	} else {
		w.log.Info("kubernetes resource accepted", "kind", it.u.Kind(), "namespace", it.u.Namespace(), "name", it.u.Name(), "generation", gen)
	}
}

func findCondition(u client.Object, typ string) map[string]any {
	for _, c := range client.NestedSlice(u, "status", "conditions") {
		if m, ok := c.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}
