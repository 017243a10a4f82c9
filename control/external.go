package control

import (
	"errors"
	"fmt"

	"github.com/weftmesh/weft/resource"
)

// ErrConflict marks an external object refused because another object
// (applied with weft apply, or another external one) configures the same
// target.
var ErrConflict = errors.New("conflict")

// SetExternal replaces the objects that come from outside the store (the
// Kubernetes API's Weft resources, kube/resources), in the order given, and
// pushes the resulting configuration. Each object goes through the same
// checks as one applied with weft apply: it is validated, and it may not
// claim what a stored object or an earlier accepted external object claims.
// errs[i] says why objs[i] was refused (nil: accepted); refused objects are
// left out, the others take effect.
func (s *Server) SetExternal(objs []resource.Object) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	stored, err := s.store.List()
	if err != nil {
		errs := make([]error, len(objs))
		for i := range errs {
			errs[i] = fmt.Errorf("reading the store: %w", err)
		}
		return errs
	}
	inStore := map[resource.Ref]bool{}
	for i := range stored {
		inStore[stored[i].Ref()] = true
	}
	errs := make([]error, len(objs))
	accepted := make([]resource.Object, 0, len(objs))
	seen := map[resource.Ref]bool{}
	for i := range objs {
		o := objs[i]
		if err := o.Validate(); err != nil {
			errs[i] = err
			continue
		}
		switch {
		case inStore[o.Ref()]:
			errs[i] = fmt.Errorf("%w: %s is also applied with weft apply; delete one of them", ErrConflict, o.Ref())
			continue
		case seen[o.Ref()]:
			errs[i] = fmt.Errorf("%w: another %s exists (in another namespace); names are one namespace in the mesh", ErrConflict, o.Ref())
			continue
		}
		trial := append(append(append([]resource.Object{}, stored...), accepted...), o)
		if err := resource.CheckConflicts(trial); err != nil {
			errs[i] = fmt.Errorf("%w: %w", ErrConflict, err)
			continue
		}
		seen[o.Ref()] = true
		accepted = append(accepted, o)
	}
	s.external = accepted
	all := append(stored, accepted...)
	s.reg.SetConfig(serviceConfig(all))
	s.messagingConfig(all)
	return errs
}

// withExternal is the stored objects plus the accepted external ones: the
// configuration in force. Called with s.mu held.
func (s *Server) withExternal(stored []resource.Object) []resource.Object {
	if len(s.external) == 0 {
		return stored
	}
	return append(append([]resource.Object{}, stored...), s.external...)
}
