package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// NodeFigures are one server's figures when the load is spread over the
// nodes of a cluster (-url a,b,c); the result's Server then holds their
// sums.
type NodeFigures struct {
	URL string `json:"url"`
	ServerFigures
}

// target is the server (or the nodes of one cluster) under test.
type target struct {
	name string   // kefu or reference
	urls []string // one or more base URLs
	pids []int    // one per URL, or none: /metrics
}

// url names the target in a report: its URLs, comma-separated.
func (t target) url() string { return strings.Join(t.urls, ",") }

// nodes is a target's servers, each with a client of its own, and the
// samplers that read each server's process.
type nodes struct {
	clients  []*client
	samplers []*sampler
}

// connect makes a client (spread over srcs source addresses) and a sampler
// for each of t's servers.
func (t target) connect(srcs int) *nodes {
	n := &nodes{}
	for i, u := range t.urls {
		c := newClient(u, srcs, 0)
		pid := 0
		if i < len(t.pids) {
			pid = t.pids[i]
		}
		n.clients = append(n.clients, c)
		n.samplers = append(n.samplers, &sampler{base: u, pid: pid, http: c.wc.HTTP})
	}
	return n
}

// client is the client for the i-th of the things spread round-robin over
// the servers (visitors, agent connections, dialers).
func (n *nodes) client(i int) *client { return n.clients[i%len(n.clients)] }

// closeSessions closes the connections the clients keep for starting
// sessions.
func (n *nodes) closeSessions() {
	for _, c := range n.clients {
		if c.sess != nil {
			c.sess.close()
		}
	}
}

// snapshot is every server's state at one moment.
type snapshot struct {
	s    []serverSample
	errs []error
}

func (n *nodes) sample(ctx context.Context) snapshot {
	out := snapshot{s: make([]serverSample, len(n.samplers)), errs: make([]error, len(n.samplers))}
	for i, s := range n.samplers {
		out.s[i], out.errs[i] = s.sample(ctx)
	}
	return out
}

// share is how many of total things spread round-robin land on server i.
func (n *nodes) share(total, i int) int {
	k := len(n.clients)
	s := total / k
	if i < total%k {
		s++
	}
	return s
}

// figures are the servers' figures between two snapshots, with conns
// connections spread round-robin over them: one server's as they are;
// several servers' summed (RSS, goroutines, CPU), with each one's too.
func (n *nodes) figures(before, after snapshot, conns int) (ServerFigures, []NodeFigures) {
	if len(n.samplers) == 1 {
		return figures(before.s[0], after.s[0], conns, before.errs[0], after.errs[0]), nil
	}
	var total ServerFigures
	var per []NodeFigures
	var errs []error
	var sources []string
	commitsKnown := true
	for i, s := range n.samplers {
		f := figures(before.s[i], after.s[i], n.share(conns, i), before.errs[i], after.errs[i])
		per = append(per, NodeFigures{URL: s.base, ServerFigures: f})
		if f.Error != "" {
			errs = append(errs, fmt.Errorf("%s: %s", s.base, f.Error))
			continue
		}
		if !contains(sources, f.Source) {
			sources = append(sources, f.Source)
		}
		total.RSSBeforeMB += f.RSSBeforeMB
		total.RSSAfterMB += f.RSSAfterMB
		total.CPUPercent += f.CPUPercent
		total.CPUSeconds += f.CPUSeconds
		total.StoreCommits += f.StoreCommits
		total.StoreWrites += f.StoreWrites
		commitsKnown = commitsKnown && before.s[i].Commits >= 0 && after.s[i].Commits >= 0
		if total.GoroutinesBefore >= 0 && f.GoroutinesBefore >= 0 && f.GoroutinesAfter >= 0 {
			total.GoroutinesBefore += f.GoroutinesBefore
			total.GoroutinesAfter += f.GoroutinesAfter
		} else {
			total.GoroutinesBefore, total.GoroutinesAfter = -1, -1
		}
	}
	if err := errors.Join(errs...); err != nil {
		return ServerFigures{Error: err.Error(), GoroutinesBefore: -1, GoroutinesAfter: -1}, per
	}
	total.Source = strings.Join(sources, ", ")
	if !commitsKnown { // a node without the counters (PostgreSQL): no partial sum
		total.StoreCommits, total.StoreWrites = 0, 0
	}
	if conns > 0 {
		total.RSSPerConnKB = (total.RSSAfterMB - total.RSSBeforeMB) * 1024 / float64(conns)
		if total.GoroutinesAfter >= 0 {
			total.GoroutinesPerConn = (total.GoroutinesAfter - total.GoroutinesBefore) / float64(conns)
		}
	}
	return total, per
}
