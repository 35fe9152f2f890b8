package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/kefuhq/kefu/core"
)

// Presence sharing: how every node knows every node's sockets.
//
// Each node counts its own live connections (agents' consoles, customers'
// realtime connections) and publishes them on PresenceTopic, a fan-out
// topic, as one ordered stream of messages per process:
//
//   - delta: the current counts of what changed since the last message
//     (absolute values, so a repeated delta changes nothing), published as
//     soon as the change is made;
//   - heartbeat: every Heartbeat, the node's agent counts and every flag it
//     knows (small);
//   - snapshot: everything, including the customers' connections; sent when
//     the node starts and when another node asks for it (sync);
//   - sync: a request for snapshots (from every node, or one);
//   - leave: the node is stopping, its sockets no longer count.
//
// Every message carries the process's epoch (its start time, with random
// low bits so that no two processes share one) and a sequence number that
// grows by one per message from 1. A restarted node replaces its earlier
// self: a larger epoch is a new process, and so is a smaller one whose
// message has seq 1 (a process's first message; its clock stepped back
// since the earlier process started); any other message with a smaller
// epoch, or with the epoch of a process already replaced, is a late one
// from an earlier process, and is ignored. A receiver
// that sees a gap (a message lost, or a node it has never heard from
// starting mid-stream) keeps what it has and asks that node for a snapshot
// at its next heartbeat. A node not heard from for MissedHeartbeats
// heartbeats of its own interval is dropped, checked every Heartbeat on a
// timer of its own (even while a publish is stuck on a bus that is down):
// the sockets of a node that died stop counting.
//
// Agents' /on and away flags are cluster-wide: each is a last-writer-wins
// register stamped with a hybrid clock (wall time, but always after the
// stamp it replaces) and the node that set it. Every node keeps every flag
// and sends them all in each heartbeat, so a flag survives the node that
// set it.

// MissedHeartbeats is how many heartbeat intervals of silence make a node
// expire.
const MissedHeartbeats = 3

// DefaultPresenceHeartbeat is PresenceConfig.Heartbeat's default.
const DefaultPresenceHeartbeat = 5 * time.Second

// maxCountsPerMessage bounds the contacts one presence message carries; a
// bigger snapshot or delta continues in further delta messages.
const maxCountsPerMessage = 2000

// PresenceOp says what a presence message is.
type PresenceOp string

// The presence operations (see above).
const (
	PresenceDelta     PresenceOp = "delta"
	PresenceHeartbeat PresenceOp = "heartbeat"
	PresenceSnapshot  PresenceOp = "snapshot"
	PresenceSync      PresenceOp = "sync"
	PresenceLeave     PresenceOp = "leave"
)

// Agent flags carried by PresenceFlag.
const (
	FlagOn   = "on"
	FlagAway = "away"
)

// PresenceState is the body of a presence envelope: one node's news. The
// node is the envelope's Node.
type PresenceState struct {
	Op PresenceOp `json:"op"`
	// Epoch identifies the publishing process: its start, in Unix
	// nanoseconds, with the low 20 bits random. A larger epoch for the same
	// node is a restart, and so is a smaller one on a message with seq 1.
	Epoch int64 `json:"epoch"`
	// Seq numbers the process's messages from 1, by one, in publish order.
	Seq uint64 `json:"seq"`
	// EveryMS is the publisher's heartbeat interval in milliseconds;
	// receivers expire it after MissedHeartbeats of them.
	EveryMS int64 `json:"every_ms"`
	// Want is, for sync, the node whose snapshot is asked for ("" for all).
	Want string `json:"want,omitempty"`
	// Agents are [agent id, live console connections] pairs: all of the
	// node's (snapshot, heartbeat) or those that changed (delta; 0: none).
	Agents [][2]int64 `json:"agents,omitempty"`
	// Contacts are [contact id, live realtime connections] pairs, as Agents
	// (never in heartbeats).
	Contacts [][2]int64 `json:"contacts,omitempty"`
	// Flags are agents' /on and away flags.
	Flags []PresenceFlag `json:"flags,omitempty"`
}

// PresenceFlag is one agent flag's last write.
type PresenceFlag struct {
	Agent int64  `json:"agent"`
	Flag  string `json:"flag"` // FlagOn or FlagAway
	Value bool   `json:"value"`
	At    int64  `json:"at"` // hybrid clock, Unix nanoseconds
	By    string `json:"by"` // the node that set it: breaks ties of At
}

func (s *PresenceState) validate() error {
	switch s.Op {
	case PresenceDelta, PresenceHeartbeat, PresenceSnapshot, PresenceSync, PresenceLeave:
	case "":
		return errors.New("missing op")
	default:
		return fmt.Errorf("unknown op %q", s.Op)
	}
	switch {
	case s.Epoch <= 0:
		return fmt.Errorf("epoch %d is not positive", s.Epoch)
	case s.Seq == 0:
		return errors.New("seq is 0")
	case s.EveryMS <= 0:
		return fmt.Errorf("every_ms %d is not positive", s.EveryMS)
	case s.Op == PresenceHeartbeat && len(s.Contacts) > 0:
		return errors.New("a heartbeat carries no contacts")
	}
	for name, pairs := range map[string][][2]int64{"agents": s.Agents, "contacts": s.Contacts} {
		for i, p := range pairs {
			if p[0] <= 0 || p[1] < 0 {
				return fmt.Errorf("%s[%d]: [%d,%d] needs a positive id and a count ≥ 0", name, i, p[0], p[1])
			}
		}
	}
	for i, f := range s.Flags {
		switch {
		case f.Agent <= 0:
			return fmt.Errorf("flags[%d]: agent %d is not positive", i, f.Agent)
		case f.Flag != FlagOn && f.Flag != FlagAway:
			return fmt.Errorf("flags[%d]: unknown flag %q", i, f.Flag)
		case f.By == "":
			return fmt.Errorf("flags[%d]: missing by", i)
		}
	}
	return nil
}

// PresenceConfig configures a ClusterPresence.
type PresenceConfig struct {
	// Node is this node's id (node_id). Required.
	Node string
	// Bus carries the presence messages (PresenceTopic, fan-out). Required.
	Bus Bus
	// Heartbeat is how often the node sends its heartbeat, and checks for
	// nodes that went silent. Default DefaultPresenceHeartbeat (5 s): a
	// dead node's sockets stop counting 15 to 20 s after it died.
	Heartbeat time.Duration
	// Clock is the time source. Default RealClock.
	Clock Clock
	// Logger: nil is slog.Default().
	Logger *slog.Logger
	// Metrics counts publish failures. nil: not counted.
	Metrics *Metrics
}

// ClusterPresence is the core.Presence of a cluster: what this node's
// sockets and agent-side channels record, merged with what every other node
// publishes on PresenceTopic (see the comment above PresenceState).
//
// Local changes are visible to this node at once (Connect is seen by
// Available before it returns) and reach the other nodes as soon as the bus
// carries them. Agent connections and contact connections count on whichever
// node they are; flags are last-writer-wins across the cluster. OnChange's
// function runs on every node when an agent becomes available on any node:
// synchronously for a change made on this node, from Run's goroutines for a
// remote one.
//
// Safe for concurrent use. Run publishes and receives; without Run, the
// presence serves this node alone.
type ClusterPresence struct {
	node  string
	bus   Bus
	every time.Duration
	clock Clock
	log   *slog.Logger
	met   *Metrics
	epoch int64

	kick    chan struct{} // wakes the sender: something to publish
	changes chan struct{} // wakes the notifier: remote agents may be available
	started bool

	mu       sync.Mutex
	seq      uint64
	myAgents map[int64]int // this node's console connections per agent
	myConts  map[int64]int // this node's realtime connections per contact
	agents   map[int64]int // all nodes' console connections per agent
	contacts map[int64]int // all nodes' realtime connections per contact
	flags    map[flagKey]PresenceFlag
	nodes    map[string]*remoteNode
	// what to publish next
	dirtyAgents map[int64]struct{}
	dirtyConts  map[int64]struct{}
	dirtyFlags  map[flagKey]struct{}
	snapshotDue bool
	asks        map[string]struct{} // nodes to ask a snapshot of ("": all)
	// remote changes not yet notified
	woke    map[int64]struct{}
	changed func(agentID int64)
}

type flagKey struct {
	agent int64
	flag  string
}

// remoteNode is what this node knows of another.
type remoteNode struct {
	epoch    int64
	seq      uint64
	every    time.Duration
	seen     time.Time // when its last message arrived (this node's clock)
	synced   bool      // has a complete picture (a snapshot, no gap since)
	asked    time.Time // when a snapshot was last asked for
	agents   map[int64]int
	contacts map[int64]int
	retired  []int64 // epochs of the node's processes this one replaced, latest last
}

// maxRetired bounds remoteNode.retired.
const maxRetired = 4

// NewClusterPresence checks cfg and returns a presence; start it with Run.
func NewClusterPresence(cfg PresenceConfig) (*ClusterPresence, error) {
	var errs []error
	if cfg.Node == "" {
		errs = append(errs, errors.New("Node is empty"))
	}
	if cfg.Bus == nil {
		errs = append(errs, errors.New("Bus is nil"))
	}
	if cfg.Heartbeat < 0 {
		errs = append(errs, fmt.Errorf("Heartbeat %v is negative", cfg.Heartbeat))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bridge.NewClusterPresence: %w", err)
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultPresenceHeartbeat
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &ClusterPresence{
		node: cfg.Node, bus: cfg.Bus, every: cfg.Heartbeat, clock: cfg.Clock, log: cfg.Logger, met: cfg.Metrics,
		epoch:    newEpoch(),
		kick:     make(chan struct{}, 1),
		changes:  make(chan struct{}, 1),
		myAgents: map[int64]int{}, myConts: map[int64]int{}, agents: map[int64]int{}, contacts: map[int64]int{},
		flags: map[flagKey]PresenceFlag{}, nodes: map[string]*remoteNode{},
		dirtyAgents: map[int64]struct{}{}, dirtyConts: map[int64]struct{}{}, dirtyFlags: map[flagKey]struct{}{},
		asks: map[string]struct{}{}, woke: map[int64]struct{}{},
	}, nil
}

// epochRandBits is how many low bits of an epoch are random.
const epochRandBits = 20

// newEpoch returns a new process's epoch: the wall clock (an identity, not
// a timer, so never the configured Clock) in Unix nanoseconds, with the
// low epochRandBits bits (about a millisecond) random, so that two
// processes started at once, or on a coarse clock, differ.
func newEpoch() int64 {
	const mask = 1<<epochRandBits - 1
	return time.Now().UnixNano()&^mask | rand.Int64N(mask+1)
}

// OnChange implements core.PresenceWatcher.
func (p *ClusterPresence) OnChange(f func(agentID int64)) {
	p.mu.Lock()
	p.changed = f
	p.mu.Unlock()
}

// Nodes returns how many nodes' sockets count: this one and every other
// node heard from and not expired.
func (p *ClusterPresence) Nodes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return 1 + len(p.nodes)
}

// available reports whether the agent is available cluster-wide. mu held.
func (p *ClusterPresence) available(id int64) bool {
	if p.flags[flagKey{id, FlagAway}].Value {
		return false
	}
	return p.agents[id] > 0 || p.flags[flagKey{id, FlagOn}].Value
}

// watch records agents' availability before a change, to tell which became
// available after it. mu held while it is used.
type watch struct {
	p      *ClusterPresence
	before map[int64]bool
}

func (w *watch) note(id int64) {
	if w.before == nil {
		w.before = map[int64]bool{}
	}
	if _, ok := w.before[id]; !ok {
		w.before[id] = w.p.available(id)
	}
}

// became returns the agents noted that were not available and now are.
func (w *watch) became() []int64 {
	var ids []int64
	for id, was := range w.before {
		if !was && w.p.available(id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// add moves a count in a node's map and in the cluster's total by delta.
func add(node, total map[int64]int, id int64, delta int) {
	if delta == 0 {
		return
	}
	if node[id] += delta; node[id] <= 0 {
		delete(node, id)
	}
	if total[id] += delta; total[id] <= 0 {
		delete(total, id)
	}
}

// local applies a change made on this node and publishes it.
func (p *ClusterPresence) local(f func(w *watch)) {
	p.mu.Lock()
	w := watch{p: p}
	f(&w)
	became := w.became()
	changed := p.changed
	p.mu.Unlock()
	p.wake()
	if changed != nil {
		for _, id := range became {
			changed(id)
		}
	}
}

func (p *ClusterPresence) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Connect implements core.Presence.
func (p *ClusterPresence) Connect(agentID int64) func() {
	p.connectAgent(agentID, 1)
	var once sync.Once
	return func() { once.Do(func() { p.connectAgent(agentID, -1) }) }
}

func (p *ClusterPresence) connectAgent(id int64, delta int) {
	p.local(func(w *watch) {
		w.note(id)
		add(p.myAgents, p.agents, id, delta)
		p.dirtyAgents[id] = struct{}{}
	})
}

// ConnectContact implements core.Presence.
func (p *ClusterPresence) ConnectContact(contactID int64) func() {
	p.connectContact(contactID, 1)
	var once sync.Once
	return func() { once.Do(func() { p.connectContact(contactID, -1) }) }
}

func (p *ClusterPresence) connectContact(id int64, delta int) {
	p.mu.Lock()
	add(p.myConts, p.contacts, id, delta)
	p.dirtyConts[id] = struct{}{}
	p.mu.Unlock()
	p.wake()
}

// SetOn implements core.Presence.
func (p *ClusterPresence) SetOn(agentID int64, on bool) { p.setFlag(agentID, FlagOn, on) }

// SetAway implements core.Presence.
func (p *ClusterPresence) SetAway(agentID int64, away bool) { p.setFlag(agentID, FlagAway, away) }

func (p *ClusterPresence) setFlag(id int64, flag string, v bool) {
	p.local(func(w *watch) {
		w.note(id)
		k := flagKey{id, flag}
		// After the write it replaces, whatever this node's clock says.
		at := max(p.clock.Now().UnixNano(), p.flags[k].At+1)
		p.flags[k] = PresenceFlag{Agent: id, Flag: flag, Value: v, At: at, By: p.node}
		p.dirtyFlags[k] = struct{}{}
	})
}

// Available implements core.Presence.
func (p *ClusterPresence) Available(context.Context) ([]int64, error) {
	p.mu.Lock()
	ids := make([]int64, 0, len(p.agents))
	for id := range p.agents {
		if p.available(id) {
			ids = append(ids, id)
		}
	}
	for k, f := range p.flags {
		if k.flag == FlagOn && f.Value && p.agents[k.agent] == 0 && p.available(k.agent) {
			ids = append(ids, k.agent)
		}
	}
	p.mu.Unlock()
	slices.Sort(ids)
	return ids, nil
}

// Connected implements core.Presence: a console connection on any node.
func (p *ClusterPresence) Connected(agentID int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.agents[agentID] > 0
}

// ContactConnected implements core.Presence: a realtime connection on any
// node.
func (p *ClusterPresence) ContactConnected(contactID int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.contacts[contactID] > 0
}

// Run publishes this node's presence and merges the other nodes' until ctx
// is done; then it tells the others it is leaving and returns nil. If the
// subscription ends before (the bus closed), it returns an error. Call it
// once.
func (p *ClusterPresence) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return errors.New("bridge: ClusterPresence.Run called twice")
	}
	p.started = true
	p.mu.Unlock()
	// The subscription ends with ctx (stop), so that when its channel
	// closes ctx.Err tells a normal end from a lost bus.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	msgs, err := p.bus.FanoutSubscriber().Subscribe(ctx, PresenceTopic)
	if err != nil {
		return fmt.Errorf("presence: subscribe: %w", err)
	}
	// Subscribed first, so that the snapshots asked for are received.
	p.mu.Lock()
	p.asks[""] = struct{}{}
	p.snapshotDue = true
	p.mu.Unlock()
	p.wake()

	var wg sync.WaitGroup
	var ended error
	wg.Add(3)
	go func() {
		defer wg.Done()
		if !p.receive(ctx, msgs) {
			ended = errors.New("presence: the subscription ended")
			stop()
		}
	}()
	go func() { defer wg.Done(); p.notify(ctx) }()
	go func() { defer wg.Done(); p.expireEvery(ctx) }()
	p.send(ctx)
	wg.Wait()
	return ended
}

// send publishes what changed, the heartbeats and the snapshots asked for,
// and the leave message at the end. It is the only publisher, so messages
// go out in sequence order.
func (p *ClusterPresence) send(ctx context.Context) {
	next := p.clock.Now().Add(p.every)
	tick := p.clock.At(next)
	for {
		select {
		case <-ctx.Done():
			p.publish(p.build(PresenceLeave))
			return
		case <-p.kick:
			p.publish(p.pending())
		case <-tick:
			now := p.clock.Now()
			p.publish(append(p.pending(), p.build(PresenceHeartbeat)...))
			next = now.Add(p.every)
			tick = p.clock.At(next)
		}
	}
}

func (p *ClusterPresence) publish(states []PresenceState) {
	for i := range states {
		msg, err := Encode(Envelope{Kind: KindPresence, Node: p.node, Presence: &states[i]}, "")
		if err == nil {
			err = p.bus.Publisher().Publish(PresenceTopic, msg)
		}
		if err != nil {
			// The others see the gap in seq and ask for a snapshot.
			p.met.publishError()
			p.log.Warn("presence: publish failed", "op", states[i].Op, "err", err)
		}
	}
}

// pending returns the messages due: snapshot requests, a snapshot, and
// the changes not yet published.
func (p *ClusterPresence) pending() []PresenceState {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []PresenceState
	if _, all := p.asks[""]; all {
		out = append(out, p.stateLocked(PresenceSync))
	} else {
		for node := range p.asks {
			s := p.stateLocked(PresenceSync)
			s.Want = node
			out = append(out, s)
		}
	}
	clear(p.asks)
	switch {
	case p.snapshotDue:
		p.snapshotDue = false
		clear(p.dirtyAgents)
		clear(p.dirtyConts)
		clear(p.dirtyFlags)
		s := p.stateLocked(PresenceSnapshot)
		s.Agents = pairs(p.myAgents, nil)
		s.Flags = p.allFlagsLocked()
		out = append(out, p.chunkContacts(s, pairs(p.myConts, nil))...)
	case len(p.dirtyAgents)+len(p.dirtyConts)+len(p.dirtyFlags) > 0:
		s := p.stateLocked(PresenceDelta)
		s.Agents = pairs(p.myAgents, p.dirtyAgents)
		for k := range p.dirtyFlags {
			s.Flags = append(s.Flags, p.flags[k])
		}
		conts := pairs(p.myConts, p.dirtyConts)
		clear(p.dirtyAgents)
		clear(p.dirtyConts)
		clear(p.dirtyFlags)
		out = append(out, p.chunkContacts(s, conts)...)
	}
	return out
}

// chunkContacts puts contacts into s and, past maxCountsPerMessage, into
// deltas that follow it.
func (p *ClusterPresence) chunkContacts(s PresenceState, conts [][2]int64) []PresenceState {
	n := min(len(conts), maxCountsPerMessage)
	s.Contacts = conts[:n]
	out := []PresenceState{s}
	for conts = conts[n:]; len(conts) > 0; conts = conts[n:] {
		n = min(len(conts), maxCountsPerMessage)
		d := p.stateLocked(PresenceDelta)
		d.Contacts = conts[:n]
		out = append(out, d)
	}
	return out
}

// build returns one message of op with what op carries.
func (p *ClusterPresence) build(op PresenceOp) []PresenceState {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stateLocked(op)
	if op == PresenceHeartbeat {
		s.Agents = pairs(p.myAgents, nil)
		s.Flags = p.allFlagsLocked()
	}
	return []PresenceState{s}
}

// stateLocked starts a message, taking the next seq. mu held.
func (p *ClusterPresence) stateLocked(op PresenceOp) PresenceState {
	p.seq++
	return PresenceState{Op: op, Epoch: p.epoch, Seq: p.seq, EveryMS: max(p.every.Milliseconds(), 1)}
}

func (p *ClusterPresence) allFlagsLocked() []PresenceFlag {
	fs := make([]PresenceFlag, 0, len(p.flags))
	for _, f := range p.flags {
		fs = append(fs, f)
	}
	return fs
}

// pairs returns [id, count] pairs of m: all of them (only nil), or those
// in only, with 0 for the ones m does not have.
func pairs(m map[int64]int, only map[int64]struct{}) [][2]int64 {
	var out [][2]int64
	if only == nil {
		out = make([][2]int64, 0, len(m))
		for id, n := range m {
			out = append(out, [2]int64{id, int64(n)})
		}
	} else {
		out = make([][2]int64, 0, len(only))
		for id := range only {
			out = append(out, [2]int64{id, int64(m[id])})
		}
	}
	slices.SortFunc(out, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	return out
}

// receive merges the other nodes' messages until ctx is done.
// It reports false if the subscription ended first.
func (p *ClusterPresence) receive(ctx context.Context, msgs <-chan *message.Message) bool {
	for {
		select {
		case <-ctx.Done():
			return true
		case msg, ok := <-msgs:
			if !ok {
				return ctx.Err() != nil
			}
			env, err := Decode(msg)
			if err != nil || env.Kind != KindPresence {
				p.log.Warn("presence: dropped a malformed message", "uuid", msg.UUID, "err", err)
			} else {
				p.apply(env.Node, *env.Presence, p.clock.Now())
			}
			msg.Ack()
		}
	}
}

// apply merges one message of node, received at now.
func (p *ClusterPresence) apply(node string, s PresenceState, now time.Time) {
	p.mu.Lock()
	if node == p.node {
		if s.Epoch != p.epoch {
			p.log.Warn("presence: another process runs with this node_id; node_id must be unique", "node", node)
		}
		p.mu.Unlock()
		return
	}
	n := p.nodes[node]
	w := watch{p: p}
	switch {
	case n != nil && (slices.Contains(n.retired, s.Epoch) || s.Epoch < n.epoch && s.Seq != 1):
		p.mu.Unlock()
		return // a late message of an earlier process of a restarted node
	case n == nil || s.Epoch != n.epoch:
		// A new process: the first heard of, or a restart (with a smaller
		// epoch only on its first message, when its clock stepped back).
		var retired []int64
		if n != nil {
			p.dropLocked(n, &w) // restarted: its old sockets are gone
			retired = append(n.retired, n.epoch)
			retired = retired[max(0, len(retired)-maxRetired):]
		}
		n = &remoteNode{epoch: s.Epoch, agents: map[int64]int{}, contacts: map[int64]int{}, asked: now, retired: retired}
		p.nodes[node] = n
	case s.Seq <= n.seq:
		p.mu.Unlock()
		return // seen already
	case s.Seq != n.seq+1:
		n.synced = false // a gap: ask for a snapshot at the next heartbeat
	}
	n.seq, n.seen, n.every = s.Seq, now, time.Duration(s.EveryMS)*time.Millisecond
	switch s.Op {
	case PresenceLeave:
		p.dropLocked(n, &w)
		delete(p.nodes, node)
	case PresenceSync:
		if s.Want == "" || s.Want == p.node {
			p.snapshotDue = true
			defer p.wake()
		}
	case PresenceSnapshot:
		for id := range n.contacts {
			add(n.contacts, p.contacts, id, -n.contacts[id])
		}
		n.synced = true
		fallthrough
	case PresenceHeartbeat:
		seen := make(map[int64]struct{}, len(s.Agents))
		for _, c := range s.Agents {
			seen[c[0]] = struct{}{}
		}
		for id := range n.agents {
			if _, ok := seen[id]; !ok {
				w.note(id)
				add(n.agents, p.agents, id, -n.agents[id])
			}
		}
	}
	for _, c := range s.Agents {
		w.note(c[0])
		add(n.agents, p.agents, c[0], int(c[1])-n.agents[c[0]])
	}
	for _, c := range s.Contacts {
		add(n.contacts, p.contacts, c[0], int(c[1])-n.contacts[c[0]])
	}
	for _, f := range s.Flags {
		k := flagKey{f.Agent, f.Flag}
		if cur, ok := p.flags[k]; ok && (f.At < cur.At || f.At == cur.At && f.By <= cur.By) {
			continue
		}
		w.note(f.Agent)
		p.flags[k] = f
	}
	became := w.became()
	for _, id := range became {
		p.woke[id] = struct{}{}
	}
	p.mu.Unlock()
	if len(became) > 0 {
		select {
		case p.changes <- struct{}{}:
		default:
		}
	}
}

// dropLocked removes what node n's sockets counted. mu held.
func (p *ClusterPresence) dropLocked(n *remoteNode, w *watch) {
	for id, c := range n.agents {
		w.note(id)
		add(n.agents, p.agents, id, -c)
	}
	for id, c := range n.contacts {
		add(n.contacts, p.contacts, id, -c)
	}
}

// expireEvery runs expire every heartbeat interval until ctx is done. It
// has a timer of its own, apart from the sender: a publish that blocks
// while the bus is down must not keep dead nodes' sockets counting.
func (p *ClusterPresence) expireEvery(ctx context.Context) {
	next := p.clock.Now().Add(p.every)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.clock.At(next):
		}
		now := p.clock.Now()
		if p.expire(now) {
			p.wake() // snapshots to ask for
		}
		next = now.Add(p.every)
	}
}

// expire drops the nodes silent for MissedHeartbeats of their intervals,
// and asks a snapshot of those whose picture has a gap. It reports whether
// it asked.
func (p *ClusterPresence) expire(now time.Time) (asked bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := watch{p: p}
	for name, n := range p.nodes {
		if now.Sub(n.seen) > MissedHeartbeats*n.every {
			p.dropLocked(n, &w)
			delete(p.nodes, name)
			p.log.Info("presence: node expired; its sockets no longer count", "node", name, "silent", now.Sub(n.seen).Round(time.Millisecond).String())
			continue
		}
		if !n.synced && now.Sub(n.asked) >= p.every {
			n.asked = now
			p.asks[name] = struct{}{}
			asked = true
		}
	}
	return asked
}

// notify calls the OnChange function for agents that became available
// through other nodes' messages, off the receiving goroutine (the function
// may drain the routing queue, which reads the store).
func (p *ClusterPresence) notify(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.changes:
		}
		p.mu.Lock()
		ids := make([]int64, 0, len(p.woke))
		for id := range p.woke {
			ids = append(ids, id)
		}
		clear(p.woke)
		changed := p.changed
		p.mu.Unlock()
		if changed == nil {
			continue
		}
		slices.Sort(ids)
		for _, id := range ids {
			changed(id)
		}
	}
}

var (
	_ core.Presence        = (*ClusterPresence)(nil)
	_ core.PresenceWatcher = (*ClusterPresence)(nil)
)
