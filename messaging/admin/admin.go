// Package admin is the control plane's side of messaging: it keeps the
// broker's stream configured, creates the durable consumer of every
// Subscription resource as soon as it is applied (so messages published
// before the service's first instance starts are kept for it), and serves
// the JSON API behind `weft topics`, `weft publish` and `weft dlq`.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/messaging"
	"github.com/weftmesh/weft/messaging/publish"
	"github.com/weftmesh/weft/resource"
)

// Config configures an Admin.
type Config struct {
	// Conn is the control plane's own connection to the broker.
	Conn *messaging.Conn
	// BrokerURL is shown in the API (credentials redacted).
	BrokerURL       string
	MaxMessageBytes int
	Logger          *slog.Logger
}

// Admin is safe for concurrent use.
type Admin struct {
	cfg Config
	log *slog.Logger
	pub *publish.Publisher

	mu      sync.Mutex
	desired map[string]resource.SubscriptionSpec // by consumer name
	dirty   chan struct{}
	samples []sample // recent counts, for rates
	dlq     map[string]*dlqCount
}

type sample struct {
	at        time.Time
	subjects  map[string]uint64 // messages stored per topic
	delivered map[string]uint64 // consumer name → delivered (consumer sequence)
}

// New returns an Admin; Run maintains the broker side.
func New(cfg Config) *Admin {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = messaging.DefaultMaxMessageBytes
	}
	a := &Admin{cfg: cfg, log: cfg.Logger, desired: map[string]resource.SubscriptionSpec{}, dirty: make(chan struct{}, 1), dlq: map[string]*dlqCount{}}
	a.pub = publish.New(publish.Config{Conn: cfg.Conn, Source: "weft-cli", MaxMessageBytes: func() int { return cfg.MaxMessageBytes }, Logger: cfg.Logger})
	return a
}

// SetSubscriptions hands over every stored object; the Subscriptions among
// them get their consumers (created, updated, and deleted when the object
// is).
func (a *Admin) SetSubscriptions(objs []resource.Object) {
	next := map[string]resource.SubscriptionSpec{}
	for _, o := range objs {
		if o.Kind != resource.KindSubscription {
			continue
		}
		spec, err := resource.ParseSubscriptionSpec(o.Spec)
		if err != nil {
			continue // validated when applied; a stored bad one was logged then
		}
		next[messaging.ConsumerName(spec.Service, spec.Topic)] = spec
	}
	a.mu.Lock()
	a.desired = next
	a.mu.Unlock()
	select {
	case a.dirty <- struct{}{}:
	default:
	}
}

// Run connects, configures the stream, keeps consumers in step with the
// Subscription resources and samples counts for rates, until ctx ends.
func (a *Admin) Run(ctx context.Context) error {
	// The connection outlives the loop: a request in flight when ctx ends
	// gets its answer before the connection closes (see reconcile).
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer func() { stopConn(); wg.Wait() }()
	wg.Add(1)
	go func() { defer wg.Done(); _ = a.cfg.Conn.Run(connCtx) }()

	var configured *messaging.Session
	pending := true
	retry := time.NewTicker(2 * time.Second)
	defer retry.Stop()
	sampleT := time.NewTicker(2 * time.Second)
	defer sampleT.Stop()
	for {
		sess := a.cfg.Conn.Session()
		if sess != nil && sess.Connected() {
			if configured != sess {
				if err := a.configureStream(ctx, sess); err != nil {
					a.log.Warn("configuring the stream", "err", err)
				} else {
					configured = sess
					pending = true
				}
			}
			if pending && configured == sess {
				if err := a.reconcile(ctx, sess); err != nil {
					a.log.Warn("creating subscription consumers; will retry", "err", err)
				} else {
					pending = false
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.dirty:
			pending = true
		case <-retry.C:
		case <-sampleT.C:
			if sess != nil && sess.Connected() {
				a.sample(ctx, sess)
			}
		case <-a.cfg.Conn.Changed():
			configured = nil
		}
	}
}

func (a *Admin) configureStream(ctx context.Context, sess *messaging.Session) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	st, err := messaging.EnsureStream(ctx, sess.JS, a.cfg.MaxMessageBytes)
	if err != nil {
		return err
	}
	// An existing stream keeps its settings (an operator may have made it
	// with 3 replicas or other limits); only a too small message size is
	// raised to fit --max-message-bytes.
	cfg := st.CachedInfo().Config
	want := messaging.StreamConfig(a.cfg.MaxMessageBytes).MaxMsgSize
	if cfg.MaxMsgSize > 0 && cfg.MaxMsgSize < want {
		cfg.MaxMsgSize = want
		if _, err := sess.JS.UpdateStream(ctx, cfg); err != nil {
			a.log.Warn("could not raise the stream's max message size", "stream", messaging.StreamName, "want", want, "err", err)
		}
	}
	return nil
}

// reconcile creates or updates the consumer of every Subscription and
// deletes consumers of Subscriptions that were deleted. Like
// configureStream it is not cut short when Run's ctx ends: Run returns
// only once the broker has answered, so the embedded broker, stopped right
// after, is never shut down mid-creation (which leaves the new stream's
// goroutines running). Consumers of
// --subscribe flags (origin local) are the sidecars' business.
func (a *Admin) reconcile(ctx context.Context, sess *messaging.Session) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	a.mu.Lock()
	desired := maps.Clone(a.desired)
	a.mu.Unlock()
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(desired)) {
		spec := desired[name]
		cfg := messaging.ConsumerConfig(spec.Service, spec, messaging.OriginResource)
		if _, err := sess.JS.CreateOrUpdateConsumer(ctx, messaging.StreamName, cfg); err != nil {
			errs = append(errs, fmt.Errorf("subscription of %s to %s: %w", spec.Service, spec.Topic, err))
		}
		if err := messaging.EnsurePartitionConsumers(ctx, sess.JS, spec.Service, spec, messaging.OriginResource); err != nil {
			errs = append(errs, fmt.Errorf("subscription of %s to %s: %w", spec.Service, spec.Topic, err))
		}
	}
	s, err := sess.JS.Stream(ctx, messaging.StreamName)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		d, ok := messaging.ParseDescription(ci.Config.Description)
		if !ok || d.Origin != messaging.OriginResource {
			continue
		}
		if _, want := desired[messaging.ConsumerName(d.Service, d.Topic)]; !want {
			if err := s.DeleteConsumer(ctx, ci.Name); err != nil {
				errs = append(errs, err)
			} else {
				a.log.Info("subscription consumer deleted", "service", d.Service, "topic", d.Topic)
			}
		}
	}
	if err := l.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ---------------------------------------------------------------- API

// The API's wire types. Fields are only ever added.
type (
	TopicsJSON struct {
		Broker    string      `json:"broker"`
		Connected bool        `json:"connected"`
		Topics    []TopicJSON `json:"topics"`
	}
	TopicJSON struct {
		Name string `json:"name"`
		// Messages stored (kept up to the stream's age and size limits).
		Messages uint64 `json:"messages"`
		// Rate is messages published per second, recently.
		Rate float64 `json:"rate"`
		// DeadLetters is the number of messages in Name + ".dlq".
		DeadLetters   uint64             `json:"deadLetters"`
		Subscriptions []SubscriptionJSON `json:"subscriptions"`
	}
	SubscriptionJSON struct {
		Service         string `json:"service"`
		Consumer        string `json:"consumer"`
		Origin          string `json:"origin"`
		DeadLetterTopic string `json:"deadLetterTopic"`
		// Lag is the number of messages not yet handed to the service.
		Lag uint64 `json:"lag"`
		// InFlight are handed out and not yet settled.
		InFlight int `json:"inFlight"`
		// Redelivered are in flight after more than one delivery.
		Redelivered int `json:"redelivered"`
		// Delivered counts deliveries, redeliveries included.
		Delivered uint64 `json:"delivered"`
		// Rate is deliveries per second, recently.
		Rate float64 `json:"rate"`
		// DeadLettered is how many of this service's dead letters are in
		// its dead letter topic now.
		DeadLettered int `json:"deadLettered"`
	}
	DeadLetterJSON struct {
		Sequence        uint64 `json:"sequence"`
		ID              string `json:"id"`
		Topic           string `json:"topic"`
		DeadLetterTopic string `json:"deadLetterTopic"`
		Subscriber      string `json:"subscriber"`
		Attempts        int    `json:"attempts"`
		Reason          string `json:"reason"`
		At              string `json:"at"`
		Size            int    `json:"size"`
		// Payload is the start of the message, as text (invalid UTF-8
		// replaced), at most PayloadPreview bytes.
		Payload   string `json:"payload"`
		Truncated bool   `json:"truncated"`
	}
	DeadLettersJSON struct {
		Topic            string           `json:"topic"`
		DeadLetterTopics []string         `json:"deadLetterTopics"`
		Total            uint64           `json:"total"`
		Messages         []DeadLetterJSON `json:"messages"`
	}
	ReplayJSON struct {
		Topic            string   `json:"topic"`
		DeadLetterTopics []string `json:"deadLetterTopics"`
		Replayed         int      `json:"replayed"`
		Failed           int      `json:"failed"`
		Remaining        uint64   `json:"remaining"`
		Errors           []string `json:"errors,omitempty"`
	}
	errorJSON struct {
		Error string `json:"error"`
	}
)

// Limits of the API.
const (
	PayloadPreview  = 256
	DefaultDLQLimit = 100
	MaxDLQLimit     = 10000
)

// Register mounts the API on mux.
func (a *Admin) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/topics", a.topics)
	mux.HandleFunc("POST /api/v1/topics/{topic}/publish", func(w http.ResponseWriter, r *http.Request) {
		a.pub.ServeTopic(w, r, r.PathValue("topic"))
	})
	mux.HandleFunc("GET /api/v1/topics/{topic}/dlq", a.listDLQ)
	mux.HandleFunc("POST /api/v1/topics/{topic}/dlq/replay", a.replayDLQ)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, errorJSON{Error: err.Error()})
}

// session returns a connected session or answers 503.
func (a *Admin) session(w http.ResponseWriter, r *http.Request) (*messaging.Session, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	s, err := a.cfg.Conn.Wait(ctx)
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return nil, false
	}
	return s, true
}

func (a *Admin) topics(w http.ResponseWriter, r *http.Request) {
	out := TopicsJSON{Broker: messaging.Redact(a.cfg.BrokerURL), Topics: []TopicJSON{}}
	sess, ok := a.session(w, r)
	if !ok {
		return
	}
	out.Connected = true
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	now, err := a.collect(ctx, sess)
	if err != nil {
		writeErr(w, http.StatusBadGateway, err)
		return
	}
	prev := a.baseline(now.at)
	byName := map[string]*TopicJSON{}
	topic := func(name string) *TopicJSON {
		t := byName[name]
		if t == nil {
			t = &TopicJSON{Name: name, Subscriptions: []SubscriptionJSON{}}
			byName[name] = t
		}
		return t
	}
	for name, n := range now.subjects {
		t := topic(name)
		t.Messages = n
		if prev != nil {
			t.Rate = rate(prev.subjects[name], n, now.at.Sub(prev.at))
		}
	}
	// A subscription is its keyless consumer and one per partition (see
	// messaging/partition): reported as one, figures summed.
	subs, subTopic := map[string]*SubscriptionJSON{}, map[string]string{}
	for _, c := range now.consumers {
		base := messaging.ConsumerName(c.desc.Service, c.desc.Topic)
		sj := subs[base]
		if sj == nil {
			subTopic[base] = c.desc.Topic
			sj = &SubscriptionJSON{Service: c.desc.Service, Consumer: base, Origin: c.desc.Origin, DeadLetterTopic: c.desc.DeadLetterTopic}
			subs[base] = sj
			if c.desc.DeadLetterTopic != "" {
				counts, err := a.dlqCounts(ctx, sess, c.desc.DeadLetterTopic, now.subjects[c.desc.DeadLetterTopic])
				if err != nil {
					a.log.Warn("counting dead letters", "topic", c.desc.DeadLetterTopic, "err", err)
				}
				sj.DeadLettered = counts[c.desc.Service]
			}
		}
		if c.desc.Partition == "" {
			sj.Origin, sj.DeadLetterTopic = c.desc.Origin, c.desc.DeadLetterTopic
		}
		sj.Lag += c.info.NumPending
		sj.InFlight += c.info.NumAckPending
		sj.Redelivered += c.info.NumRedelivered
		sj.Delivered += c.info.Delivered.Consumer
		if prev != nil {
			sj.Rate += rate(prev.delivered[c.info.Name], c.info.Delivered.Consumer, now.at.Sub(prev.at))
		}
	}
	for _, base := range slices.Sorted(maps.Keys(subs)) {
		sj := subs[base]
		t := topic(subTopic[base])
		t.Subscriptions = append(t.Subscriptions, *sj)
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		t := byName[name]
		t.DeadLetters = now.subjects[name+resource.DeadLetterSuffix]
		slices.SortFunc(t.Subscriptions, func(x, y SubscriptionJSON) int { return strings.Compare(x.Service, y.Service) })
		out.Topics = append(out.Topics, *t)
	}
	writeJSON(w, http.StatusOK, out)
}

func rate(before, after uint64, dt time.Duration) float64 {
	if after < before || dt <= 0 {
		return 0
	}
	return float64(after-before) / dt.Seconds()
}

// baseline is the newest sample at least a second older than at.
func (a *Admin) baseline(at time.Time) *sample {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(a.samples) - 1; i >= 0; i-- {
		if at.Sub(a.samples[i].at) >= time.Second {
			return &a.samples[i]
		}
	}
	return nil
}

type consumerState struct {
	info *consumerInfo
	desc messaging.Description
}

type consumerInfo struct {
	Name           string
	NumPending     uint64
	NumAckPending  int
	NumRedelivered int
	Delivered      struct{ Consumer uint64 }
}

type snapshot struct {
	at        time.Time
	subjects  map[string]uint64
	consumers []consumerState
}

// collect reads per-topic counts and every Weft consumer.
func (a *Admin) collect(ctx context.Context, sess *messaging.Session) (snapshot, error) {
	snap := snapshot{at: time.Now(), subjects: map[string]uint64{}}
	s, err := messaging.EnsureStream(ctx, sess.JS, a.cfg.MaxMessageBytes)
	if err != nil {
		return snap, err
	}
	info, err := s.Info(ctx, withSubjects())
	if err != nil {
		return snap, fmt.Errorf("stream %s: %w", messaging.StreamName, err)
	}
	for subj, n := range info.State.Subjects {
		if t, ok := messaging.TopicOf(subj); ok {
			snap.subjects[t] += n // a topic is one subject, or one per partition
		}
	}
	l := s.ListConsumers(ctx)
	for ci := range l.Info() {
		d, ok := messaging.ParseDescription(ci.Config.Description)
		if !ok {
			continue
		}
		c := &consumerInfo{Name: ci.Name, NumPending: ci.NumPending, NumAckPending: ci.NumAckPending, NumRedelivered: ci.NumRedelivered}
		c.Delivered.Consumer = ci.Delivered.Consumer
		snap.consumers = append(snap.consumers, consumerState{info: c, desc: d})
	}
	if err := l.Err(); err != nil {
		return snap, fmt.Errorf("listing consumers: %w", err)
	}
	return snap, nil
}

// sample records counts for rates; a few are kept.
func (a *Admin) sample(ctx context.Context, sess *messaging.Session) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	snap, err := a.collect(ctx, sess)
	if err != nil {
		return
	}
	sm := sample{at: snap.at, subjects: snap.subjects, delivered: map[string]uint64{}}
	for _, c := range snap.consumers {
		sm.delivered[c.info.Name] = c.info.Delivered.Consumer
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.samples = append(a.samples, sm)
	if len(a.samples) > 4 {
		a.samples = slices.Delete(a.samples, 0, len(a.samples)-4)
	}
}

func limitParam(r *http.Request, def int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > MaxDLQLimit {
		return 0, fmt.Errorf("limit %q: want 1..%d", v, MaxDLQLimit)
	}
	return n, nil
}

// dlqTopics are the dead letter topics of topic's subscriptions (T.dlq
// when none says otherwise), or the one named by ?dlq=.
func (a *Admin) dlqTopics(ctx context.Context, sess *messaging.Session, r *http.Request, topic string) ([]string, error) {
	if d := r.URL.Query().Get("dlq"); d != "" {
		if err := messaging.ValidateTopic(d); err != nil {
			return nil, fmt.Errorf("dlq: %w", err)
		}
		return []string{d}, nil
	}
	set := map[string]bool{topic + resource.DeadLetterSuffix: true}
	snap, err := a.collect(ctx, sess)
	if err != nil {
		return nil, err
	}
	for _, c := range snap.consumers {
		if c.desc.Topic == topic && c.desc.DeadLetterTopic != "" {
			set[c.desc.DeadLetterTopic] = true
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}
