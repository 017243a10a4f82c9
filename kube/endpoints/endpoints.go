// Package endpoints puts Kubernetes Services into the registry from their
// EndpointSlices, so meshed apps call unmeshed Kubernetes services by name:
// each ready endpoint becomes an instance of the service (the Service's
// name) at its pod IP and the slice port chosen by name, with its zone and
// its pod's labels (for subsets).
//
// Conditions are honoured as kube-proxy does: a ready endpoint gets
// traffic; one that is not ready gets none; a terminating endpoint that is
// still serving gets traffic only while its service has no ready endpoint
// at all, so a rollout's last pods drain instead of failing.
//
// Pods that carry Weft's sidecar (annotation weft.dev/injected) are left
// out: their sidecars register themselves.
//
// Every change (coalesced) recomputes the whole set and hands the registry
// only the differences, so a missed event cannot leave a stale instance.
package endpoints

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/kube"
	"github.com/weftmesh/weft/kube/client"
	"github.com/weftmesh/weft/registry"
)

// Annotations and labels read.
const (
	// AnnotationPort on a Service names the port (of several) the mesh
	// calls; without it, the port named "http", else the only port.
	AnnotationPort = "weft.dev/port"
	// LabelServiceName is the EndpointSlice label naming its Service.
	LabelServiceName = "kubernetes.io/service-name"
	// AnnotationInjected marks a pod whose sidecar registers it itself.
	AnnotationInjected = "weft.dev/injected"
	// LabelVersion is the pod label reported as the instance's version.
	LabelVersion = "version"
)

// Options configure Discovery.
type Options struct {
	Client   *client.Client
	Registry *registry.Registry
	// Namespace limits discovery to one namespace ("" for all).
	Namespace string
	Logger    *slog.Logger
}

// Discovery is the running watch.
type Discovery struct {
	o                      Options
	log                    *slog.Logger
	services, slices, pods *client.Informer
	kick                   kube.Kick
	registered             map[string]map[string]bool // service → instance ids we upserted
	warned                 map[string]string          // service key → last warning, said once
}

// New sets up the informers.
func New(o Options) (*Discovery, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Discovery{o: o, log: o.Logger, kick: kube.NewKick(),
		registered: map[string]map[string]bool{}, warned: map[string]string{}}
	d.services = kube.Informer(o.Client, kube.Services, o.Namespace, o.Logger, d.kick.Kick)
	d.slices = kube.Informer(o.Client, kube.EndpointSlices, o.Namespace, o.Logger, d.kick.Kick)
	d.pods = kube.Informer(o.Client, kube.Pods, o.Namespace, o.Logger, d.kick.Kick)
	return d, nil
}

// owner is the registry owner of every instance this package registers.
type owner struct{}

var theOwner = &owner{}

// Run watches until ctx is done, then removes what it registered.
func (d *Discovery) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, inf := range []*client.Informer{d.services, d.slices, d.pods} {
		wg.Go(func() { inf.Run(ctx) })
	}
	if !waitSynced(ctx, d.services, d.slices, d.pods) {
		return nil
	}
	d.log.Info("kubernetes endpoints synced", "namespace", d.o.Namespace)
	d.kick.Kick()
	for {
		select {
		case <-ctx.Done():
			d.apply(nil)
			return nil
		case <-d.kick:
			d.apply(d.compute())
		}
	}
}

// compute builds every service's instances from the informers' caches.
func (d *Discovery) compute() map[string][]*pb.Instance {
	out := map[string][]*pb.Instance{}
	for _, sl := range d.slices.List() {
		ns := sl.Namespace()
		svcName := sl.Labels()[LabelServiceName]
		if svcName == "" {
			continue
		}
		svc := d.services.Get(ns, svcName)
		if svc == nil {
			continue
		}
		key := ns + "/" + svcName
		port, err := pickPort(sl, svc.Annotations()[AnnotationPort])
		if err != nil {
			d.warnOnce(key, fmt.Sprintf("service %s: %v", key, err))
			continue
		}
		if client.NestedString(sl, "addressType") == "FQDN" {
			continue
		}
		for _, e := range client.NestedSlice(sl, "endpoints") {
			em, ok := e.(map[string]any)
			if !ok {
				continue
			}
			if in := d.instance(em, ns, svcName, port); in != nil {
				out[svcName] = append(out[svcName], in)
			}
		}
	}
	for name, ins := range out {
		out[name] = fallback(ins)
	}
	return out
}

// instance is one endpoint as a registry instance (nil: not for the mesh).
// Ready carries the endpoint's readiness; a terminating, serving endpoint
// is marked with the label weft.dev/terminating for fallback.
func (d *Discovery) instance(e map[string]any, ns, svc string, port int64) *pb.Instance {
	addrs := client.NestedStrings(e, "addresses")
	if len(addrs) == 0 {
		return nil
	}
	ready := condition(e, "ready", true)
	serving := condition(e, "serving", ready)
	terminating := condition(e, "terminating", false)
	in := &pb.Instance{Service: svc, Address: net.JoinHostPort(addrs[0], strconv.FormatInt(port, 10)), Ready: ready && !terminating, Unmeshed: true}
	ref := client.NestedStringMap(e, "targetRef")
	id := addrs[0]
	if ref["kind"] == "Pod" && ref["name"] != "" {
		id = ref["name"]
		pns := ref["namespace"]
		if pns == "" {
			pns = ns
		}
		if pod := d.pod(pns, ref["name"]); pod != nil {
			if pod.Annotations()[AnnotationInjected] == "true" {
				return nil
			}
			in.Labels = maps.Clone(pod.Labels())
			in.Version = pod.Labels()[LabelVersion]
		}
	}
	in.Id = "k8s/" + ns + "/" + id + ":" + strconv.FormatInt(port, 10)
	if z := client.NestedString(e, "zone"); z != "" {
		in.Zone = z
	} else if zs := client.NestedSlice(e, "hints", "forZones"); len(zs) > 0 {
		if zm, ok := zs[0].(map[string]any); ok {
			in.Zone, _ = zm["name"].(string)
		}
	}
	if terminating && serving {
		if in.Labels == nil {
			in.Labels = map[string]string{}
		}
		in.Labels[labelTerminating] = "true"
	}
	return in
}

// labelTerminating marks a terminating endpoint that still serves.
const labelTerminating = "weft.dev/terminating"

// fallback: when no endpoint of a service is ready, its terminating but
// serving endpoints take the traffic.
func fallback(ins []*pb.Instance) []*pb.Instance {
	if slices.ContainsFunc(ins, func(in *pb.Instance) bool { return in.Ready }) {
		return ins
	}
	for _, in := range ins {
		if in.Labels[labelTerminating] == "true" {
			in.Ready = true
		}
	}
	return ins
}

// condition reads endpoint.conditions[name]; absent means def (the API's
// rule: a missing ready is ready).
func condition(e map[string]any, name string, def bool) bool {
	v := client.Nested(e, "conditions", name)
	if v == nil {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		return def
	}
	return b
}

// pickPort chooses the slice's port: the one named by the Service's
// weft.dev/port annotation, else the one named "http", else the only one.
func pickPort(sl client.Object, want string) (int64, error) {
	ports := client.NestedSlice(sl, "ports")
	var names []string
	var only int64
	for _, p := range ports {
		pm, ok := p.(map[string]any)
		if !ok {
			continue
		}
		name, _ := pm["name"].(string)
		num, _ := pm["port"].(int64)
		if proto, _ := pm["protocol"].(string); proto != "" && proto != "TCP" {
			continue
		}
		if num == 0 {
			continue
		}
		names = append(names, strconv.Quote(name))
		if want != "" && name == want {
			return num, nil
		}
		if want == "" && name == "http" {
			return num, nil
		}
		only = num
	}
	switch {
	case want != "":
		return 0, fmt.Errorf("annotation %s names port %q, but its endpoints have ports %v", AnnotationPort, want, names)
	case len(names) == 1:
		return only, nil
	case len(names) == 0:
		return 0, fmt.Errorf("its endpoints have no TCP port")
	}
	return 0, fmt.Errorf("its endpoints have ports %v and none is named http: name the mesh's with the %s annotation", names, AnnotationPort)
}

// pod is the pod ns/name from the informer (nil when unknown, or in a
// unit test without one).
func (d *Discovery) pod(ns, name string) client.Object {
	if d.pods == nil {
		return nil
	}
	return d.pods.Get(ns, name)
}

// waitSynced waits for every informer's first list; false when ctx ended
// first.
func waitSynced(ctx context.Context, infs ...*client.Informer) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if !slices.ContainsFunc(infs, func(i *client.Informer) bool { return !i.HasSynced() }) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

func (d *Discovery) warnOnce(key, msg string) {
	if d.warned[key] == msg {
		return
	}
	d.warned[key] = msg
	d.log.Warn("kubernetes service left out of the mesh", "reason", msg)
}

// apply hands the registry the differences from what was registered.
func (d *Discovery) apply(next map[string][]*pb.Instance) {
	for svc, ins := range next {
		ids := map[string]bool{}
		for _, in := range ins {
			ids[in.Id] = true
			d.o.Registry.Upsert(in, theOwner)
		}
		for id := range d.registered[svc] {
			if !ids[id] {
				d.o.Registry.Remove(svc, id, theOwner, "kubernetes endpoint gone")
			}
		}
		d.registered[svc] = ids
	}
	for svc, ids := range d.registered {
		if _, ok := next[svc]; ok {
			continue
		}
		for id := range ids {
			d.o.Registry.Remove(svc, id, theOwner, "kubernetes endpoints gone")
		}
		delete(d.registered, svc)
	}
}
