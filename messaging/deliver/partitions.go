package deliver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/partition"
)

// Keyed messages are published to one of partition.Count partitions of
// their topic (messaging.SubjectFor), each with its own durable consumer.
// Every instance of the subscribing service announces itself in the lease
// bucket (key <consumer>.m.<instance>, renewed), computes from that member
// list which partitions it should deliver (partition.Owners), and holds a
// lease (key <consumer>.p<n>) on each partition it delivers: one instance
// per partition at a time, hence one key's messages in order across
// instances.
//
// Taking a partition over, the new holder first resets the partition's
// consumer to its ack floor: everything not acknowledged is delivered
// again, in stream order, before anything newer. So a holder that stopped
// or died mid-delivery can never have its unfinished messages overtaken;
// the price is that a handover may deliver again messages that were
// acknowledged out of order (at-least-once allows it). A holder never
// hands a message of a partition back (no Nak): that would let the broker
// redeliver it after newer ones. It keeps retrying in place while it holds
// the lease, and on losing the lease simply stops; the next holder's reset
// delivers the message again.
const (
	leaseRenew   = messaging.LeaseTTL / 4
	partitionsIn = 500 * time.Millisecond // how often holdings are reconsidered
	kvTimeout    = 3 * time.Second
	resetProbe   = time.Second // a broker that knows the reset API answers at once
)

// part is one partition while this instance holds its lease.
type part struct {
	p          int
	key        string
	rev        uint64
	renewed    time.Time
	loopCancel context.CancelFunc
	loopDone   chan struct{}
	// lost is cancelled when the lease is lost (not renewed in time):
	// deliveries in flight are abandoned, they may be made elsewhere now.
	lost context.Context
	lose context.CancelFunc

	mu         sync.Mutex
	validUntil time.Time
	revoked    bool
	active     int           // deliveries begun and not finished
	idle       chan struct{} // closed once revoked with none active
	idleClosed bool
	released   chan struct{} // closed once the lease is given up
}

// begin marks a delivery of one of the partition's messages as started;
// false if the partition is no longer held (then the message is dropped:
// the next holder delivers it again).
func (pt *part) begin() bool {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.revoked || !time.Now().Before(pt.validUntil) {
		return false
	}
	pt.active++
	return true
}

func (pt *part) end() {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.active--
	pt.closeIdleLocked()
}

func (pt *part) closeIdleLocked() {
	if pt.revoked && pt.active == 0 && !pt.idleClosed {
		close(pt.idle)
		pt.idleClosed = true
	}
}

// holds reports whether the lease is still held (between attempts of a
// delivery retried in place).
func (pt *part) holds() bool {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return !pt.revoked && time.Now().Before(pt.validUntil)
}

// revoke stops new deliveries and returns a channel closed once none is in
// flight.
func (pt *part) revoke() <-chan struct{} {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	pt.revoked = true
	pt.closeIdleLocked()
	return pt.idle
}

// partitions runs the keyed side of one subscription on one instance.
type partitions struct {
	s       *subscriber
	kv      jetstream.KeyValue
	self    string
	member  string // this instance's membership key
	pull    func(ctx context.Context, cons jetstream.Consumer, pt *part) error
	hard    context.Context
	noReset bool // the broker has no consumer reset API
	held    [partition.Count]*part
	members map[string]member // by membership key
	pulls   sync.WaitGroup    // the pull loops of held partitions
	gives   sync.WaitGroup    // partitions being given up
}

type member struct {
	id string
	at time.Time // last heard of
}

func memberPrefix(service, topic string) string {
	return messaging.ConsumerName(service, topic) + ".m."
}

// run holds the partitions this instance should deliver until ctx ends,
// then stops pulling from them. Leases are given up by releaseAll, once
// the workers have finished.
func (ps *partitions) run(ctx context.Context) {
	ps.members = map[string]member{}
	w, err := ps.kv.Watch(ctx, memberPrefix(ps.s.m.cfg.Service, ps.s.spec.Topic)+"*")
	var updates <-chan jetstream.KeyValueEntry
	if err != nil {
		ps.s.log.Warn("cannot watch the subscription's members; delivering keyed messages as if alone", "err", err)
	} else {
		defer func() { _ = w.Stop() }()
		updates = w.Updates()
	}
	var memberRev uint64
	tick := time.NewTicker(partitionsIn)
	defer tick.Stop()
	for {
		memberRev = ps.announce(ctx, memberRev)
		ps.step(ctx)
		select {
		case <-ctx.Done():
			for _, pt := range ps.held {
				if pt != nil {
					pt.revoke()
					pt.loopCancel()
				}
			}
			ps.pulls.Wait()
			return
		case e, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			ps.heard(e)
		case <-tick.C:
		}
	}
}

// announce keeps this instance's membership key fresh.
func (ps *partitions) announce(ctx context.Context, rev uint64) uint64 {
	if m, ok := ps.members[ps.member]; ok && rev != 0 && time.Since(m.at) < leaseRenew {
		return rev
	}
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	n, err := ps.kv.Put(kctx, ps.member, []byte(ps.self))
	if err != nil {
		ps.s.log.Debug("announcing membership", "err", err)
		return rev
	}
	ps.members[ps.member] = member{id: ps.self, at: time.Now()}
	return n
}

func (ps *partitions) heard(e jetstream.KeyValueEntry) {
	if e == nil { // end of the initial values
		return
	}
	if e.Key() == ps.member {
		return // this instance knows about itself
	}
	id := string(e.Value())
	if e.Operation() != jetstream.KeyValuePut || id == "" {
		delete(ps.members, e.Key())
		return
	}
	// An entry up to LeaseTTL old may come in the initial values.
	age := min(max(time.Since(e.Created()), 0), messaging.LeaseTTL)
	ps.members[e.Key()] = member{id: id, at: time.Now().Add(-age)}
}

// live is the member list: those heard of within LeaseTTL, and this one.
func (ps *partitions) live() []string {
	out := []string{ps.self}
	for k, m := range ps.members {
		if k != ps.member && time.Since(m.at) < messaging.LeaseTTL {
			out = append(out, m.id)
		}
	}
	return out
}

// step renews, takes and gives up leases to match partition.Owners.
func (ps *partitions) step(ctx context.Context) {
	owners := partition.Owners(ps.live())
	for p := range partition.Count {
		pt := ps.held[p]
		if pt != nil {
			select {
			case <-pt.released:
				ps.held[p], pt = nil, nil
			default:
			}
		}
		if pt != nil && pt.isRevoked() {
			continue // being given up
		}
		want := owners[p] == ps.self
		switch {
		case pt != nil && !want:
			ps.release(pt, false)
		case pt != nil:
			ps.renew(ctx, pt)
		case want:
			ps.take(ctx, p)
		}
	}
}

func (pt *part) isRevoked() bool {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.revoked
}

func (ps *partitions) renew(ctx context.Context, pt *part) {
	if time.Since(pt.renewed) < leaseRenew {
		return
	}
	sent := time.Now()
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	rev, err := ps.kv.Update(kctx, pt.key, []byte(ps.self), pt.rev)
	cancel()
	switch {
	case err == nil:
		pt.rev, pt.renewed = rev, sent
		pt.mu.Lock()
		pt.validUntil = sent.Add(messaging.LeaseTTL - messaging.LeaseMargin)
		pt.mu.Unlock()
	case errors.Is(err, jetstream.ErrKeyNotFound), isWrongRevision(err):
		ps.s.log.Warn("lost the lease of a partition; another instance delivers it now", "partition", pt.p, "err", err)
		ps.release(pt, true)
	default:
		if !pt.holds() {
			ps.s.log.Warn("could not renew the lease of a partition in time; stopping its deliveries", "partition", pt.p, "err", err)
			ps.release(pt, true)
		}
	}
}

func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// take claims partition p if its lease is free, resets its consumer to the
// ack floor and starts pulling from it.
func (ps *partitions) take(ctx context.Context, p int) {
	svc, topic := ps.s.m.cfg.Service, ps.s.spec.Topic
	key := messaging.LeaseKey(svc, topic, p)
	sent := time.Now()
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	rev, err := ps.kv.Create(kctx, key, []byte(ps.self))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			ps.s.log.Debug("taking a partition's lease", "partition", p, "err", err)
		}
		return
	}
	name := messaging.PartitionConsumerName(svc, topic, p)
	cons, err := ps.reset(kctx, p, name)
	if err != nil {
		ps.s.log.Warn("could not reset a partition's consumer; giving the partition back", "partition", p, "err", err)
		_ = ps.kv.Delete(kctx, key, jetstream.LastRevision(rev))
		return
	}
	pt := &part{p: p, key: key, rev: rev, renewed: sent, validUntil: sent.Add(messaging.LeaseTTL - messaging.LeaseMargin),
		loopDone: make(chan struct{}), idle: make(chan struct{}), released: make(chan struct{})}
	pt.lost, pt.lose = context.WithCancel(ps.hard)
	var lctx context.Context
	lctx, pt.loopCancel = context.WithCancel(ctx)
	ps.held[p] = pt
	ps.pulls.Add(1)
	go func() {
		defer ps.pulls.Done()
		defer close(pt.loopDone)
		for {
			err := ps.pull(lctx, cons, pt)
			if lctx.Err() != nil {
				return
			}
			ps.s.log.Warn("pulling from a partition failed; retrying", "partition", p, "err", err)
			if !sleep(lctx, time.Second) {
				return
			}
			if c, err := ps.ensure(lctx, p); err == nil {
				cons = c
			}
		}
	}()
	ps.s.log.Debug("partition taken", "partition", p)
}

// reset puts the partition's consumer back to its ack floor, so whatever
// the previous holder left unacknowledged comes first, in order.
func (ps *partitions) reset(ctx context.Context, p int, name string) (jetstream.Consumer, error) {
	cons, err := ps.ensure(ctx, p)
	if err != nil {
		return nil, err
	}
	if !ps.noReset {
		rctx, cancel := context.WithTimeout(ctx, resetProbe)
		_, err = ps.s.sess.JS.ResetConsumer(rctx, messaging.StreamName, name)
		cancel()
		if err == nil {
			return cons, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		// An older broker (the Debian nats-server 2.9, for one) does not
		// answer the reset API at all; do not ask again on this session.
		ps.noReset = true
		ps.s.log.Info("the broker cannot reset a consumer; handing partitions over by re-creating their consumers", "err", err)
	}
	// Make the consumer again, starting after its ack floor. Between the
	// delete and the create a crash of this sidecar would lose the floor;
	// the next holder would then start from new messages.
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the consumer's ack floor: %w", err)
	}
	cfg := messaging.PartitionConsumerConfig(ps.s.m.cfg.Service, ps.s.spec, ps.s.origin, p)
	cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, info.AckFloor.Stream+1
	if err := ps.s.sess.JS.DeleteConsumer(ctx, messaging.StreamName, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	return ps.s.sess.JS.CreateConsumer(ctx, messaging.StreamName, cfg)
}

// ensure returns partition p's consumer, creating it if it is gone.
func (ps *partitions) ensure(ctx context.Context, p int) (jetstream.Consumer, error) {
	name := messaging.PartitionConsumerName(ps.s.m.cfg.Service, ps.s.spec.Topic, p)
	c, err := ps.s.sess.JS.Consumer(ctx, messaging.StreamName, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return ps.s.sess.JS.CreateConsumer(ctx, messaging.StreamName, messaging.PartitionConsumerConfig(ps.s.m.cfg.Service, ps.s.spec, ps.s.origin, p))
	}
	return c, err
}

// release stops pulling from pt and, once its deliveries in flight are
// done, gives the lease up (unless it was lost: then there is nothing to
// give, and deliveries in flight are abandoned).
func (ps *partitions) release(pt *part, lost bool) {
	idle := pt.revoke()
	pt.loopCancel()
	if lost {
		pt.lose()
	}
	ps.gives.Add(1)
	go func() {
		defer ps.gives.Done()
		defer close(pt.released)
		<-pt.loopDone
		<-idle
		if !lost {
			ps.giveUp(pt)
		}
	}()
}

func (ps *partitions) giveUp(pt *part) {
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	if err := ps.kv.Delete(ctx, pt.key, jetstream.LastRevision(pt.rev)); err != nil {
		ps.s.log.Debug("giving a partition's lease up", "partition", pt.p, "err", err)
	}
}

// releaseAll gives up every lease still held and this instance's
// membership, after run has returned and the workers are done: the other
// instances take the partitions over at once instead of after LeaseTTL.
func (ps *partitions) releaseAll() {
	ps.gives.Wait()
	for _, pt := range ps.held {
		if pt == nil {
			continue
		}
		select {
		case <-pt.released:
		default:
			pt.revoke()
			ps.giveUp(pt)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	_ = ps.kv.Delete(ctx, ps.member)
}

// memberToken is an instance id as a key token.
func memberToken(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) > 100 {
		b = b[:100]
	}
	return string(b) + "_" + strconv.FormatUint(uint64(len(id)), 10)
}
