package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/weftmesh/weft/api/discoveryv1"
	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/registry"
	"github.com/weftmesh/weft/resource"
	"github.com/weftmesh/weft/version"
)

// Limits on what one sidecar may ask of the control plane.
const (
	maxSubscriptions = 4096
	maxLabels        = 64
	maxFieldLen      = 256
)

// discoveryServer serves the Discovery stream. One stream per sidecar; the
// stream's life is the lease of the instance registered on it.
type discoveryServer struct {
	pb.UnimplementedDiscoveryServer
	reg      *registry.Registry
	log      *slog.Logger
	leaseTTL time.Duration
	id       string
	settings map[string]string
	sec      *security
	// checkJoin decides whether a CSR's join token may claim a service.
	checkJoin func(ctx context.Context, token, namespace, service string) error
	strict    bool // register only instances whose stream has a certificate
	// callers are the pure client sidecars to scrape (see callers.go).
	callers *callers
}

func (d *discoveryServer) Connect(stream pb.Discovery_ConnectServer) error {
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	if d.callers != nil {
		defer d.callers.join(stream.Context(), stream)()
	}

	sub := registry.NewSubscriber(0, func() {
		cancel(errOverflow)
	})
	defer d.reg.RemoveSubscriber(sub)

	// One writer per stream: gRPC's Send is not safe for concurrent use, and
	// the registry must never wait on a sidecar's socket.
	ackc := make(chan struct{}, 1)
	certc := make(chan *pb.Certificate, 4)
	defer d.sec.forget(stream)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := d.write(ctx, stream, sub, ackc, certc)
		if err != nil {
			cancel(err)
		}
	}()
	defer wg.Wait()

	var (
		inst    *pb.Instance // what this stream registered
		claimed string       // the service this stream's certificate is for
		subs    = map[string]bool{}
	)
	defer func() {
		if inst != nil {
			d.reg.Remove(inst.Service, inst.Id, stream, "stream closed: "+causeText(ctx))
		}
	}()

	// The lease: any message renews it; none for leaseTTL cuts the stream.
	// A timer callback rather than a goroutine per stream: with 5,000
	// sidecars that is 5,000 goroutine stacks fewer, and a heartbeat costs
	// a timer reset instead of two goroutine hand-offs (bench/push).
	lease := time.AfterFunc(d.leaseTTL, func() { cancel(errLeaseExpired) })
	defer lease.Stop()

	recvc := make(chan *pb.SidecarMessage)
	recvErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case recvc <- m:
			case <-ctx.Done():
				return
			}
		}
	}()

	for {
		var m *pb.SidecarMessage
		select {
		case <-ctx.Done():
			err := context.Cause(ctx)
			if errors.Is(err, errOverflow) {
				return status.Error(codes.ResourceExhausted, "sidecar fell behind: resync")
			}
			if errors.Is(err, errLeaseExpired) {
				return status.Error(codes.DeadlineExceeded, "lease expired: no message for "+d.leaseTTL.String())
			}
			return status.FromContextError(ctx.Err()).Err()
		case err := <-recvErr:
			cancel(err)
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case m = <-recvc:
		}
		lease.Reset(d.leaseTTL)
		switch msg := m.Msg.(type) {
		case *pb.SidecarMessage_Register:
			in := msg.Register.GetInstance()
			if err := validateInstance(in); err != nil {
				return status.Errorf(codes.InvalidArgument, "register: %v", err)
			}
			if inst != nil && (inst.Id != in.Id || inst.Service != in.Service) {
				return status.Error(codes.InvalidArgument, "register: a stream carries one instance; its id and service cannot change")
			}
			if d.strict && claimed == "" {
				return status.Error(codes.PermissionDenied, "register: strict mTLS: ask for a certificate (with a join token) before registering")
			}
			if claimed != "" && in.Service != claimed {
				return status.Errorf(codes.PermissionDenied, "register: this stream's certificate is for service %q, not %q", claimed, in.Service)
			}
			if inst == nil {
				d.sec.registered(stream, in.Id)
			}
			inst = in
			d.reg.Upsert(in, stream)
		case *pb.SidecarMessage_Subscribe:
			var add []string
			for _, name := range msg.Subscribe.Services {
				if err := resource.ValidateName(name); err != nil {
					return status.Errorf(codes.InvalidArgument, "subscribe: service name: %v", err)
				}
				if !subs[name] {
					subs[name] = true
					add = append(add, name)
				}
			}
			if len(subs) > maxSubscriptions {
				return status.Errorf(codes.ResourceExhausted, "more than %d subscriptions on one stream", maxSubscriptions)
			}
			d.reg.Subscribe(sub, add...)
		case *pb.SidecarMessage_Unsubscribe:
			for _, name := range msg.Unsubscribe.Services {
				delete(subs, name)
			}
			d.reg.Unsubscribe(sub, msg.Unsubscribe.Services...)
		case *pb.SidecarMessage_Deregister:
			if inst != nil {
				d.reg.Remove(inst.Service, inst.Id, stream, "deregistered")
				inst = nil
			}
			// The removal is queued to every subscriber; tell the sidecar.
			select {
			case ackc <- struct{}{}:
			default:
			}
		case *pb.SidecarMessage_Csr:
			have := claimed
			if have == "" && inst != nil {
				have = inst.Service
			}
			id := ""
			if inst != nil {
				id = inst.Id
			}
			var cert *pb.Certificate
			var svc string
			err := d.checkJoin(ctx, msg.Csr.GetToken(), msg.Csr.GetNamespace(), msg.Csr.GetService())
			if err == nil {
				cert, svc, err = d.sec.issue(msg.Csr, have, stream, id)
			}
			if err != nil {
				d.log.Warn("certificate refused", "service", msg.Csr.GetService(), "err", err)
				cert = &pb.Certificate{Error: err.Error()}
			} else {
				claimed = svc
			}
			select {
			case certc <- cert:
			case <-ctx.Done():
			}
		case *pb.SidecarMessage_Heartbeat:
		default:
			return status.Error(codes.InvalidArgument, "unknown message")
		}
	}
}

var (
	errOverflow     = errors.New("subscriber queue overflow")
	errLeaseExpired = errors.New("lease expired")
)

func causeText(ctx context.Context) string {
	if err := context.Cause(ctx); err != nil {
		return err.Error()
	}
	return "closed"
}

func (d *discoveryServer) write(ctx context.Context, stream pb.Discovery_ConnectServer, sub *registry.Subscriber, ackc <-chan struct{}, certc <-chan *pb.Certificate) error {
	if err := stream.Send(&pb.ControlMessage{Msg: &pb.ControlMessage_Hello{Hello: &pb.Hello{ControlId: d.id, Settings: d.settings, ControlVersion: version.Short()}}}); err != nil {
		return err
	}
	// The bundle first (a sidecar may come from another control plane),
	// then again whenever a root rotation changes it.
	bundleGen := d.sec.ca.Generation()
	if err := stream.Send(&pb.ControlMessage{Msg: &pb.ControlMessage_Certificate{Certificate: d.sec.bundleMessage()}}); err != nil {
		return err
	}
	bundleTick := time.NewTicker(time.Second)
	defer bundleTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-certc:
			if err := stream.Send(&pb.ControlMessage{Msg: &pb.ControlMessage_Certificate{Certificate: c}}); err != nil {
				return err
			}
		case <-bundleTick.C:
			if g := d.sec.ca.Generation(); g != bundleGen {
				bundleGen = g
				if err := stream.Send(&pb.ControlMessage{Msg: &pb.ControlMessage_Certificate{Certificate: d.sec.bundleMessage()}}); err != nil {
					return err
				}
			}
		case u, ok := <-sub.C:
			if !ok {
				return errOverflow
			}
			if err := stream.Send(&pb.ControlMessage{Msg: &pb.ControlMessage_Update{Update: u}}); err != nil {
				return err
			}
		case <-ackc:
			// Drain what is queued before the ack so the sidecar has seen
			// its own removal's neighbours too; the order is per stream.
			if err := stream.Send(&pb.ControlMessage{Msg: &pb.ControlMessage_Ack{Ack: &pb.Ack{}}}); err != nil {
				return err
			}
		}
	}
}

func validateInstance(in *pb.Instance) error {
	if in == nil {
		return errors.New("no instance")
	}
	if err := resource.ValidateName(in.Service); err != nil {
		return fmt.Errorf("service: %w", err)
	}
	if in.Id == "" || len(in.Id) > maxFieldLen {
		return errors.New("id: must be 1 to 256 characters")
	}
	if in.Address == "" || len(in.Address) > maxFieldLen {
		return errors.New("address: must be 1 to 256 characters")
	}
	if len(in.Version) > maxFieldLen || len(in.Zone) > maxFieldLen {
		return errors.New("version and zone: at most 256 characters")
	}
	if len(in.Load) > balancer.MaxLoadHeader {
		return fmt.Errorf("load: at most %d bytes", balancer.MaxLoadHeader)
	}
	if len(in.Labels) > maxLabels {
		return fmt.Errorf("labels: at most %d", maxLabels)
	}
	for k, v := range in.Labels {
		if len(k) > maxFieldLen || len(v) > maxFieldLen {
			return errors.New("labels: keys and values at most 256 characters")
		}
	}
	return nil
}
