// Package registry is the control plane's live view of the mesh: which
// instances each service has (soft state, rebuilt from sidecar registrations),
// each service's policy, and who subscribes to what. Every change to a service
// is pushed to that service's subscribers as an incremental ServiceUpdate on a
// bounded per-subscriber queue; a subscriber that falls behind is cut off, so
// a slow sidecar never blocks the control plane or the other sidecars.
package registry

import (
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/weftmesh/weft/api/discoveryv1"
)

// DefaultQueueSize bounds each subscriber's pending updates.
const DefaultQueueSize = 1024

// Registry is safe for concurrent use.
type Registry struct {
	log       *slog.Logger
	syncUntil time.Time // before this, hold resets of empty services (see Subscribe)

	mu       sync.Mutex
	services map[string]*service
	// subs holds subscribers by service name, including names not (yet) known.
	subs map[string]map[*Subscriber]struct{}

	overflows atomic.Int64
}

type service struct {
	name      string
	version   uint64
	instances map[string]*entry
	config    []*pb.ConfigObject // objects configuring the service, sorted
}

type entry struct {
	inst  *pb.Instance
	owner any // the registration's owner (a stream); only it may remove it
}

// Options configure a Registry.
type Options struct {
	Logger *slog.Logger
	// SyncGrace: for this long after start, a new subscription to a service
	// with no instances waits (up to the grace) for one to register before it
	// is answered. After a control-plane restart that keeps sidecars, which
	// still hold their last view, from being told "no instances" while the
	// instances are still reconnecting.
	SyncGrace time.Duration
	QueueSize int
}

// New returns an empty registry.
func New(o Options) *Registry {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{
		log:       o.Logger,
		syncUntil: time.Now().Add(o.SyncGrace),
		services:  map[string]*service{},
		subs:      map[string]map[*Subscriber]struct{}{},
	}
	return r
}

// Subscriber receives updates for the services it subscribes to.
type Subscriber struct {
	// C delivers updates in order. It is closed after the subscriber is
	// removed or overflows.
	C        chan *pb.ServiceUpdate
	overflow func()

	mu      sync.Mutex // guards pending and closed; taken after Registry.mu
	pending map[string]bool
	closed  bool
}

// NewSubscriber makes a subscriber with a queue of size n (DefaultQueueSize
// when 0). onOverflow is called once, without locks held by the caller's
// goroutine, when the queue is full; it should end the stream.
func NewSubscriber(n int, onOverflow func()) *Subscriber {
	if n <= 0 {
		n = DefaultQueueSize
	}
	return &Subscriber{C: make(chan *pb.ServiceUpdate, n), overflow: onOverflow, pending: map[string]bool{}}
}

// send enqueues without blocking. Called with r.mu held.
func (r *Registry) send(s *Subscriber, u *pb.ServiceUpdate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.C <- u:
	default:
		s.closed = true
		close(s.C)
		r.overflows.Add(1)
		if s.overflow != nil {
			go s.overflow()
		}
	}
}

// Overflows counts subscribers cut off for falling behind.
func (r *Registry) Overflows() int64 { return r.overflows.Load() }

func (r *Registry) svc(name string) *service {
	s := r.services[name]
	if s == nil {
		s = &service{name: name, instances: map[string]*entry{}}
		r.services[name] = s
	}
	return s
}

func (s *service) reset() *pb.ServiceUpdate {
	u := &pb.ServiceUpdate{Service: s.name, Version: s.version, Reset_: true, Exists: true,
		ConfigChanged: true, Config: s.config}
	for _, id := range slices.Sorted(maps.Keys(s.instances)) {
		u.Upserts = append(u.Upserts, s.instances[id].inst)
	}
	return u
}

// publish sends u to the service's subscribers; a subscriber still waiting
// for its first answer gets a reset instead. Called with r.mu held.
func (r *Registry) publish(s *service, u *pb.ServiceUpdate) {
	var reset *pb.ServiceUpdate
	for sub := range r.subs[s.name] {
		sub.mu.Lock()
		pending := sub.pending[s.name]
		delete(sub.pending, s.name)
		sub.mu.Unlock()
		if pending {
			if reset == nil {
				reset = s.reset()
			}
			r.send(sub, reset)
			continue
		}
		r.send(sub, u)
	}
}

// Upsert adds or updates an instance registered by owner. It returns false if
// nothing changed.
func (r *Registry) Upsert(inst *pb.Instance, owner any) bool {
	inst = proto.CloneOf(inst)
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.svc(inst.Service)
	if old, ok := s.instances[inst.Id]; ok && proto.Equal(old.inst, inst) {
		old.owner = owner
		return false
	}
	s.instances[inst.Id] = &entry{inst: inst, owner: owner}
	s.version++
	r.log.Info("instance upserted", "service", inst.Service, "id", inst.Id, "address", inst.Address, "ready", inst.Ready)
	r.publish(s, &pb.ServiceUpdate{Service: s.name, Version: s.version, Exists: true, Upserts: []*pb.Instance{inst}})
	return true
}

// Remove deletes an instance if owner still owns it (nil owner: any owner).
func (r *Registry) Remove(serviceName, id string, owner any, reason string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.services[serviceName]
	if s == nil {
		return false
	}
	e, ok := s.instances[id]
	if !ok || (owner != nil && e.owner != owner) {
		return false
	}
	delete(s.instances, id)
	s.version++
	r.log.Info("instance removed", "service", serviceName, "id", id, "reason", reason)
	r.publish(s, &pb.ServiceUpdate{Service: s.name, Version: s.version, Exists: true, Removes: []string{id}})
	r.forgetIfUnused(s)
	return true
}

// forgetIfUnused drops a service that has no instance, no configuration and
// no subscriber left, so the registry does not keep every name it ever saw.
// A service that is still subscribed to stays (its version keeps counting);
// Services hides it while it has no instances. Called with r.mu held.
func (r *Registry) forgetIfUnused(s *service) {
	if len(s.instances) == 0 && len(s.config) == 0 && len(r.subs[s.name]) == 0 {
		delete(r.services, s.name)
	}
}

// SetConfig replaces every service's configuration at once: config maps a
// service name to the objects that configure it, sorted by kind and name.
// Only services whose configuration changed are pushed.
func (r *Registry) SetConfig(config map[string][]*pb.ConfigObject) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, s := range r.services {
		if _, ok := config[name]; !ok && len(s.config) > 0 {
			s.config = nil
			s.version++
			r.log.Info("config changed", "service", name, "objects", 0)
			r.publish(s, &pb.ServiceUpdate{Service: name, Version: s.version, Exists: true, ConfigChanged: true})
			r.forgetIfUnused(s)
		}
	}
	for name, objs := range config {
		s := r.svc(name)
		if slices.EqualFunc(s.config, objs, func(a, b *pb.ConfigObject) bool { return proto.Equal(a, b) }) {
			continue
		}
		s.config = objs
		s.version++
		r.log.Info("config changed", "service", name, "objects", len(objs))
		r.publish(s, &pb.ServiceUpdate{Service: name, Version: s.version, Exists: true, ConfigChanged: true, Config: objs})
	}
}

// Subscribe adds sub to each named service and queues a reset for each. A
// service not known yet is answered with exists=false — except during the
// sync grace, when the answer waits for the first registration or for the
// grace to end (see Options.SyncGrace).
func (r *Registry) Subscribe(sub *Subscriber, names ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	inGrace := time.Now().Before(r.syncUntil)
	for _, name := range names {
		m := r.subs[name]
		if m == nil {
			m = map[*Subscriber]struct{}{}
			r.subs[name] = m
		}
		m[sub] = struct{}{}
		s := r.services[name]
		if inGrace && (s == nil || len(s.instances) == 0) {
			sub.mu.Lock()
			sub.pending[name] = true
			sub.mu.Unlock()
			continue
		}
		if s == nil {
			r.send(sub, &pb.ServiceUpdate{Service: name, Reset_: true, Exists: false, ConfigChanged: true})
			continue
		}
		r.send(sub, s.reset())
	}
}

// StartGrace (re)starts the sync grace from now. The control plane calls it
// when it begins serving, so that time spent starting up (opening the store,
// starting the broker) does not use up the grace.
func (r *Registry) StartGrace(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncUntil = time.Now().Add(d)
}

// EndGrace answers every subscription still held by the sync grace. The
// control plane calls it when the grace ends.
func (r *Registry) EndGrace() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncUntil = time.Time{}
	for name, m := range r.subs {
		for sub := range m {
			sub.mu.Lock()
			pending := sub.pending[name]
			delete(sub.pending, name)
			sub.mu.Unlock()
			if !pending {
				continue
			}
			if s := r.services[name]; s != nil {
				r.send(sub, s.reset())
			} else {
				r.send(sub, &pb.ServiceUpdate{Service: name, Reset_: true, Exists: false, ConfigChanged: true})
			}
		}
	}
}

// Unsubscribe removes sub from the named services.
func (r *Registry) Unsubscribe(sub *Subscriber, names ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range names {
		r.unsubscribe(sub, name)
	}
}

func (r *Registry) unsubscribe(sub *Subscriber, name string) {
	if m := r.subs[name]; m != nil {
		delete(m, sub)
		if len(m) == 0 {
			delete(r.subs, name)
			if s := r.services[name]; s != nil {
				r.forgetIfUnused(s)
			}
		}
	}
	sub.mu.Lock()
	delete(sub.pending, name)
	sub.mu.Unlock()
}

// RemoveSubscriber drops sub from every service and closes its channel.
func (r *Registry) RemoveSubscriber(sub *Subscriber) {
	r.mu.Lock()
	for name, m := range r.subs {
		if _, ok := m[sub]; ok {
			r.unsubscribe(sub, name)
		}
	}
	r.mu.Unlock()
	sub.mu.Lock()
	if !sub.closed {
		sub.closed = true
		close(sub.C)
	}
	sub.mu.Unlock()
}

// ServiceView is a service as the API shows it.
type ServiceView struct {
	Name      string
	Instances []*pb.Instance
	Config    []*pb.ConfigObject
}

// Services returns every service that has instances, with its instances,
// sorted. A service whose last instance went away is not listed (its
// policy, if any, is still among the applied resources).
func (r *Registry) Services() []ServiceView {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ServiceView, 0, len(r.services))
	for _, name := range slices.Sorted(maps.Keys(r.services)) {
		s := r.services[name]
		if len(s.instances) == 0 {
			continue
		}
		v := ServiceView{Name: name, Config: s.config}
		for _, id := range slices.Sorted(maps.Keys(s.instances)) {
			v.Instances = append(v.Instances, proto.CloneOf(s.instances[id].inst))
		}
		out = append(out, v)
	}
	return out
}

// Config returns the objects configuring service as last pushed, whether
// or not it has instances (nil when none).
func (r *Registry) Config(service string) []*pb.ConfigObject {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.services[service]; s != nil {
		return s.config
	}
	return nil
}
