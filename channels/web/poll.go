package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/kefuhq/kefu/httpx"
)

// Long polling: the protocol's frames over plain HTTP, for networks that
// break WebSockets.
//
// Each request stands alone, so any node of a cluster can answer it: a GET
// carries the client's cursor, registers a waiter with the hub, replays from
// the store what follows the cursor and answers at once if there is any,
// else waits up to long_poll_timeout for the hub. Because the cursor is the
// same as a WebSocket's, a client can move between the transports at any
// point without losing or repeating a message. A POST carries frames to the
// server and is answered with their replies (ack, error, pong).

const (
	// maxPollFrames bounds one long-poll answer; a client further behind
	// asks again with the cursor it got.
	maxPollFrames = 500
	// maxPostFrames bounds the frames of one POST.
	maxPostFrames = 100
)

// waiter is a long poll's outlet: it gathers the frames that pass its
// cursor, up to a bound (what it cannot take is replayed by the next poll,
// for the answer's cursor conversation and newer ones; see lateFrames for
// the older).
type waiter struct {
	mu     sync.Mutex
	frames []*frame
	filter cursorFilter
	// hold is the conversation whose frames wait unfiltered until settle
	// gives its position (0: none): until the replay has read where the
	// conversation is, the client's cursor may be past its end.
	hold int64
	max  int
	wake chan struct{}
}

func newWaiter(f cursorFilter, max int) *waiter {
	return &waiter{filter: f, max: max, wake: make(chan struct{}, 1)}
}

func (w *waiter) push(f *frame) {
	w.mu.Lock()
	if len(w.frames) >= w.max || !(w.hold != 0 && f.msg && f.conv == w.hold) && !w.filter.pass(f) {
		w.mu.Unlock()
		return
	}
	w.frames = append(w.frames, f)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// settle sets the position in conversation conv, the one held, to seq, and
// drops what it already queued of conv up to there.
func (w *waiter) settle(conv, seq int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hold = 0
	w.filter.at(conv, seq)
	kept := w.frames[:0]
	for _, f := range w.frames {
		if f.msg && f.conv == conv && !w.filter.pass(f) {
			continue
		}
		kept = append(kept, f)
	}
	clear(w.frames[len(kept):])
	w.frames = kept
	if len(kept) == 0 {
		select { // a wake-up for frames now dropped
		case <-w.wake:
		default:
		}
	}
}

func (w *waiter) take() []*frame {
	w.mu.Lock()
	defer w.mu.Unlock()
	fs := w.frames
	w.frames = nil
	w.max = 0 // answered: take nothing more
	return fs
}

// await waits for the waiter's first frames, the poll timeout, the client
// leaving or the channel stopping, and returns what it has.
func (rt *realtime) await(ctx context.Context, w *waiter) []*frame {
	t := time.NewTimer(rt.c.cfg.LongPollTimeout)
	defer t.Stop()
	select {
	case <-w.wake:
	case <-t.C:
	case <-ctx.Done():
	case <-rt.stopping:
	}
	return w.take()
}

// pollVisitor is GET /lp/visitor?conversation_id=&last_seq=.
func (rt *realtime) pollVisitor(w http.ResponseWriter, r *http.Request) {
	v, err := rt.parseVisitor(bearerToken(r))
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	q := r.URL.Query()
	conv, err1 := queryInt(q, "conversation_id")
	after, err2 := queryInt(q, "last_seq")
	if errors.Join(err1, err2) != nil {
		httpx.FromError(w, rt.log, httpx.BadRequest("conversation_id and last_seq must be whole numbers ≥ 0, each given once"))
		return
	}
	if !rt.waitReady(r.Context()) {
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "starting or stopping; retry")
		return
	}
	ctx := r.Context()
	p := &peer{rt: rt, vis: v}
	wt := newWaiter(cursorFilter{}, rt.c.cfg.SendQueue)
	wt.hold = conv // until the replay reads where conv is (settle)
	s := &sub{aud: audVisitor, identity: v.identity, out: wt}
	rt.hub.register(s) // by identity, and conv for s alone until the read below (see wsConn.start)
	rt.hub.claim(s, conv)
	defer rt.hub.unregister(s)
	parts, err := p.planReplay(ctx, conv, after)
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	if conv > 0 {
		// From the client's cursor, or the conversation's end if that is
		// past it (planReplay).
		wt.settle(conv, parts[0].after)
	}

	var frames []*frame
	curConv, curSeq, err := p.replayVisitor(ctx, parts, maxPollFrames, func(f *frame) error {
		frames = append(frames, f)
		return nil
	})
	if err != nil && !errors.Is(err, errReplayFull) {
		httpx.FromError(w, rt.log, err)
		return
	}
	if len(frames) > 0 {
		// The answer's cursor moves past every conversation before
		// curConv: a message of one of them committed after its part of
		// the replay was read is in wt, and goes out with this answer.
		frames = append(frames, lateFrames(frames, wt.take(), curConv)...)
	}
	if id := p.contact; id > 0 {
		// Like an agent's, a polling visitor's contact counts as connected
		// between polls too.
		end := rt.contactLeases.begin(id, func() func() { return rt.svc.Presence().ConnectContact(id) }, 2*rt.c.cfg.PingInterval)
		defer end()
	}
	if len(frames) == 0 {
		frames = rt.await(ctx, wt)
		for _, f := range frames {
			if !f.msg {
				continue
			}
			if f.conv > curConv {
				curConv, curSeq = f.conv, f.seq
			} else if f.conv == curConv && f.seq > curSeq {
				curSeq = f.seq
			}
		}
	}
	writePoll(w, frames, visitorCursor(curConv, curSeq))
}

// lateFrames returns the message frames of live that belong to a
// conversation before cur and follow what replayed holds of it. Only an
// automatic message can land in a conversation older than the customer's
// newest (an agent's reply there is refused), and one dispatched after the
// answer is still missed by this poll and the next: the visitor sees it in
// the conversation's history.
func lateFrames(replayed, live []*frame, cur int64) []*frame {
	var late []*frame
	for _, f := range live {
		if !f.msg || f.conv >= cur || slices.ContainsFunc(replayed, func(r *frame) bool { return r.msg && r.conv == f.conv && r.seq >= f.seq }) {
			continue
		}
		late = append(late, f)
	}
	return late
}

// pollAgent is GET /lp/agent?cursor=.
func (rt *realtime) pollAgent(w http.ResponseWriter, r *http.Request) {
	a, _, err := rt.c.authenticateAgent(r.Context(), bearerToken(r))
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	var after int64
	hasCursor := r.URL.Query().Has("cursor")
	if hasCursor {
		if after, err = queryInt(r.URL.Query(), "cursor"); err != nil {
			httpx.FromError(w, rt.log, httpx.BadRequest("cursor must be a whole number ≥ 0, given once"))
			return
		}
	}
	if !rt.waitReady(r.Context()) {
		httpx.Error(w, http.StatusServiceUnavailable, httpx.CodeUnavailable, "starting or stopping; retry")
		return
	}
	if !hasCursor {
		after = rt.hub.released.Load() // no cursor: from now on
	}
	ctx := r.Context()
	end := rt.leases.begin(a.ID, func() func() { return rt.svc.Presence().Connect(a.ID) }, 2*rt.c.cfg.PingInterval)
	defer end()
	p := &peer{rt: rt, agent: &a}
	wt := newWaiter(cursorFilter{agent: true, lastID: after}, rt.c.cfg.AgentSendQueue)
	s := &sub{aud: audAgent, agentID: a.ID, out: wt}
	rt.hub.register(s)
	defer rt.hub.unregister(s)

	var frames []*frame
	last, err := p.replayAgent(ctx, after, maxPollFrames, func(f *frame) error {
		frames = append(frames, f)
		return nil
	})
	if err != nil && !errors.Is(err, errReplayFull) {
		httpx.FromError(w, rt.log, err)
		return
	}
	if len(frames) == 0 {
		frames = rt.await(ctx, wt)
		for _, f := range frames {
			if f.msg && f.id > last {
				last = f.id
			}
		}
	}
	writePoll(w, frames, agentCursor(last))
}

// postVisitor is POST /lp/visitor: frames from a visitor.
func (rt *realtime) postVisitor(w http.ResponseWriter, r *http.Request) {
	v, err := rt.parseVisitor(bearerToken(r))
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	rt.post(w, r, &peer{rt: rt, vis: v})
}

// postAgent is POST /lp/agent: frames from an agent.
func (rt *realtime) postAgent(w http.ResponseWriter, r *http.Request) {
	a, _, err := rt.c.authenticateAgent(r.Context(), bearerToken(r))
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	rt.post(w, r, &peer{rt: rt, agent: &a})
}

func (rt *realtime) post(w http.ResponseWriter, r *http.Request, p *peer) {
	body, err := readBody(w, r, rt.c.cfg.MaxFrameBytes)
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	writePoll(w, rt.handleBatch(r.Context(), p, body), cursorOut{})
}

// handleBatch carries out the frames of a POST body (one frame, or an array
// of frames) in order and returns their replies.
func (rt *realtime) handleBatch(ctx context.Context, p *peer, body []byte) []*frame {
	raws, perr := splitFrames(body)
	if perr != nil {
		return []*frame{errorFrame(perr)}
	}
	out := make([]*frame, 0, len(raws))
	for _, raw := range raws {
		f, perr := decodeFrame(raw)
		switch {
		case perr != nil:
			out = append(out, errorFrame(perr))
		case f.Type == frameHello:
			out = append(out, errorFrame(badFrame("long polling has no hello: each request carries its token in Authorization")))
		default:
			if reply := p.handle(ctx, &f); reply != nil {
				out = append(out, reply)
			}
		}
	}
	return out
}

// splitFrames reads a POST body: one frame object, or an array of them.
func splitFrames(body []byte) ([]json.RawMessage, *protoError) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, badFrame("empty body: send a frame or an array of frames")
	}
	if body[0] != '[' {
		return []json.RawMessage{body}, nil
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return nil, badFrame("malformed JSON: %s", jsonProblem(err))
	}
	if len(raws) > maxPostFrames {
		return nil, badFrame("at most %d frames per request", maxPostFrames)
	}
	return raws, nil
}

// writePoll answers a long-poll request: {"frames":[…], …cursor}.
func writePoll(w http.ResponseWriter, frames []*frame, cur cursorOut) {
	var b bytes.Buffer
	b.WriteString(`{"frames":[`)
	for i, f := range frames {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(f.data)
	}
	b.WriteByte(']')
	if c := mustJSON(cur); len(c) > 2 {
		b.WriteByte(',')
		b.Write(c[1 : len(c)-1])
	}
	b.WriteString("}\n")
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
}
