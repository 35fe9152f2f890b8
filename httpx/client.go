package httpx

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ClientIP returns the address of the client that made r. X-Forwarded-For
// is believed only from the trusted proxies: walking it from the right, the
// first address that is not a trusted proxy is the client. With no trusted
// proxies, the TCP peer is the client, whatever the headers say.
func ClientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := remoteAddr(r)
	if !isTrusted(peer, trusted) {
		return peer
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return peer // a garbled chain: trust nothing beyond the peer
			}
			a = a.Unmap()
			if !isTrusted(a, trusted) {
				return a
			}
			peer = a
		}
	}
	return peer
}

func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Limiter is a set of token buckets, one per key (an IP, a visitor, an
// account), created on first use and forgotten after a while idle. Safe for
// concurrent use.
type Limiter struct {
	rate  rate.Limit
	burst int
	idle  time.Duration
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// NewLimiter allows each key `per` events per `every` on average, with
// bursts of up to burst.
func NewLimiter(per int, every time.Duration, burst int) *Limiter {
	return &Limiter{
		rate:    rate.Limit(float64(per) / every.Seconds()),
		burst:   burst,
		idle:    every + time.Duration(float64(burst)/float64(per)*float64(every)),
		now:     time.Now,
		buckets: map[string]*bucket{},
	}
}

// Allow takes one event for key. When the key is over its limit it returns
// false and how long until an event would be allowed.
func (l *Limiter) Allow(key string) (bool, time.Duration) {
	return l.AllowN(key, 1)
}

// AllowN takes n events for key at once.
func (l *Limiter) AllowN(key string, n int) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > l.idle {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > l.idle {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[key] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, n)
	if !r.OK() {
		return false, l.idle
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Len reports how many keys the limiter holds (for tests and metrics).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Window is one limit of a WindowLimiter: at most N events in any span of
// Span.
type Window struct {
	N    int
	Span time.Duration
}

// WindowLimiter allows each key at most Window.N events in any span of
// Window.Span, for every window given: a sliding log of the key's recent
// events, exact where a token bucket is not (a bucket with burst b lets
// b + rate × span through in a span). For providers that drop, rather than
// refuse, what goes over their limit. Keys idle for the longest span are
// forgotten. Safe for concurrent use.
type WindowLimiter struct {
	windows []Window
	longest time.Duration
	cap     int // events kept per key: the largest N
	now     func() time.Time

	mu    sync.Mutex
	logs  map[string]*eventLog
	swept time.Time
}

// eventLog is a ring of a key's most recent events, oldest at head.
type eventLog struct {
	at   []time.Time
	head int
}

// NewWindowLimiter returns a limiter enforcing every window (at least one;
// each N ≥ 1, Span > 0).
func NewWindowLimiter(windows ...Window) *WindowLimiter {
	if len(windows) == 0 {
		panic("httpx: a window limiter without windows")
	}
	l := &WindowLimiter{windows: windows, now: time.Now, logs: map[string]*eventLog{}}
	for _, w := range windows {
		if w.N < 1 || w.Span <= 0 {
			panic(fmt.Sprintf("httpx: window limit %d per %v", w.N, w.Span))
		}
		l.cap = max(l.cap, w.N)
		l.longest = max(l.longest, w.Span)
	}
	return l
}

// Allow records one event for key if every window has room for it, and
// otherwise returns false and how long until it would.
func (l *WindowLimiter) Allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > l.longest {
		for k, g := range l.logs {
			if newest := g.at[(g.head+len(g.at)-1)%len(g.at)]; now.Sub(newest) >= l.longest {
				delete(l.logs, k)
			}
		}
		l.swept = now
	}
	g := l.logs[key]
	var wait time.Duration
	if g != nil {
		n := len(g.at)
		for _, w := range l.windows {
			if n < w.N {
				continue
			}
			// The w.N-th most recent event: while it is within the span,
			// one more would make w.N + 1 in it.
			if d := g.at[(g.head+n-w.N)%n].Add(w.Span).Sub(now); d > wait {
				wait = d
			}
		}
	}
	if wait > 0 {
		return false, wait
	}
	if g == nil {
		g = &eventLog{at: make([]time.Time, 0, min(l.cap, 8))}
		l.logs[key] = g
	}
	if len(g.at) < l.cap {
		g.at = append(g.at, now)
	} else {
		g.at[g.head] = now
		g.head = (g.head + 1) % len(g.at)
	}
	return true, 0
}

// Len reports how many keys the limiter holds (for tests and metrics).
func (l *WindowLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.logs)
}
