// Package bench is `kefu bench`, the load harness of issue 10: it drives a
// kefu server (a separate process) through the real protocol
// (docs/protocol.md) and reports what the server did, with its RSS, CPU
// and goroutines read from its own process (/proc/<pid>, or its /metrics).
//
// Scenarios: idle (hold N visitor WebSockets), handshake (sessions
// established per second), throughput (visitors → agents over WebSockets,
// every message accounted for), longpoll (the same over long polling) and
// reference (the same client against a bare gorilla/websocket relay in its
// own process, for ratios). The server must allow the load: raise the web
// channel's limits (see BENCHMARKS.md, "How to run").
//
// Given several servers (-url a,b,c: the nodes of one cluster, each with
// its -pid), idle, handshake, throughput and longpoll spread visitors,
// dialers and agent connections over them round-robin, so messages cross
// nodes, and report each node's figures and their sums.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Report is what a bench run prints (and writes as JSON).
type Report struct {
	Command  string    `json:"command"`
	Date     time.Time `json:"date"`
	Machine  Machine   `json:"machine"`
	Results  []Result  `json:"results"`
	Ratios   []Ratio   `json:"ratios,omitempty"`
	Warnings []string  `json:"warnings,omitempty"`
}

// Machine describes where the bench ran.
type Machine struct {
	Cores     int     `json:"cores"`
	MemoryGiB float64 `json:"memory_gib,omitempty"`
	NoFile    string  `json:"open_files_limit,omitempty"`
	LoadAvg   string  `json:"load_avg,omitempty"`
	Go        string  `json:"go"`
}

// Result is one scenario run against one target.
type Result struct {
	Scenario   string            `json:"scenario"`
	Target     string            `json:"target"` // kefu or reference
	URL        string            `json:"url"`
	Idle       *IdleResult       `json:"idle,omitempty"`
	Handshake  *HandshakeResult  `json:"handshake,omitempty"`
	Throughput *ThroughputResult `json:"throughput,omitempty"`
}

// Ratio is a kefu figure over the reference's.
type Ratio struct {
	Figure    string  `json:"figure"`
	Kefu      float64 `json:"kefu"`
	Reference float64 `json:"reference"`
	Ratio     float64 `json:"ratio"`
}

// Main runs `kefu bench` with the arguments after "bench".
func Main(args []string, stdout, stderr io.Writer) int {
	cfg, err := Parse(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		fmt.Fprintln(stderr, "usage: kefu bench idle|handshake|throughput|longpoll|reference -url http://HOST:PORT [flags] (kefu bench SCENARIO -h for the flags)")
		fmt.Fprintln(stderr, "       kefu bench reference-server [-addr HOST:PORT]   (the bare gorilla/websocket relay that reference drives, on its own)")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cfg.Scenario {
	case "reference-server":
		return referenceServer(ctx, cfg, stdout, stderr)
	case "idle-child":
		return idleChild(ctx, cfg, stdout)
	}
	rep, err := Run(ctx, cfg, stderr)
	if rep != nil {
		rep.Command = "kefu bench " + strings.Join(args, " ")
		rep.WriteTable(stdout)
		if cfg.JSON != "" {
			b, _ := json.MarshalIndent(rep, "", "  ")
			if werr := os.WriteFile(cfg.JSON, append(b, '\n'), 0o644); werr != nil {
				fmt.Fprintln(stderr, "bench:", werr)
				return 1
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

// Run runs cfg's scenario and returns its report.
func Run(ctx context.Context, cfg Config, stderr io.Writer) (*Report, error) {
	rep := &Report{Date: time.Now().UTC(), Machine: machine()}
	kefu := target{name: "kefu", urls: cfg.URLs, pids: cfg.PIDs}
	if len(kefu.urls) == 0 { // a Config not from Parse
		kefu.urls = []string{cfg.URL}
		if cfg.PID > 0 {
			kefu.pids = []int{cfg.PID}
		}
	}
	run := func(sc string, t target) error {
		r := Result{Scenario: sc, Target: t.name, URL: t.url()}
		var err error
		switch sc {
		case "idle":
			r.Idle, err = runIdle(ctx, cfg, t)
		case "handshake":
			r.Handshake, err = runHandshake(ctx, cfg, t)
		case "throughput":
			r.Throughput, err = runThroughput(ctx, cfg, t, false)
		case "longpoll":
			r.Throughput, err = runThroughput(ctx, cfg, t, true)
		}
		if r.Idle != nil || r.Handshake != nil || r.Throughput != nil {
			rep.Results = append(rep.Results, r)
		}
		return err
	}
	if cfg.Scenario != "reference" {
		return rep, run(cfg.Scenario, kefu)
	}
	refURL, refPID, stopRef, err := startReference(ctx, stderr)
	if err != nil {
		return rep, err
	}
	defer stopRef()
	ref := target{name: "reference", urls: []string{refURL}, pids: []int{refPID}}
	for _, sc := range cfg.Scenarios {
		if err := run(sc, kefu); err != nil {
			return rep, err
		}
		if err := run(sc, ref); err != nil {
			return rep, err
		}
	}
	rep.Ratios = ratios(rep.Results)
	return rep, nil
}

func ratios(rs []Result) []Ratio {
	var out []Ratio
	find := func(sc, tg string) *Result {
		for i := range rs {
			if rs[i].Scenario == sc && rs[i].Target == tg {
				return &rs[i]
			}
		}
		return nil
	}
	add := func(fig string, k, r float64) {
		x := Ratio{Figure: fig, Kefu: k, Reference: r}
		if r != 0 {
			x.Ratio = k / r
		}
		out = append(out, x)
	}
	// A figure that is 0 when not known (a server's CPU, if its sampler
	// failed) gives no ratio rather than one of 0.
	addKnown := func(fig string, k, r float64) {
		if k > 0 && r > 0 {
			add(fig, k, r)
		}
	}
	if k, r := find("throughput", "kefu"), find("throughput", "reference"); k != nil && r != nil {
		add("messages/s", k.Throughput.MessagesPerSec, r.Throughput.MessagesPerSec)
		add("latency p99 ms", k.Throughput.Latency.P99MS, r.Throughput.Latency.P99MS)
		addKnown("server CPU µs per message", k.Throughput.ServerCPUus, r.Throughput.ServerCPUus)
	}
	if k, r := find("handshake", "kefu"), find("handshake", "reference"); k != nil && r != nil {
		add("handshakes/s", k.Handshake.PerSecond, r.Handshake.PerSecond)
		addKnown("server CPU µs per handshake", k.Handshake.ServerCPUus, r.Handshake.ServerCPUus)
	}
	if k, r := find("idle", "kefu"), find("idle", "reference"); k != nil && r != nil {
		add("RSS KB per idle connection", k.Idle.Server.RSSPerConnKB, r.Idle.Server.RSSPerConnKB)
	}
	return out
}

func goroutines() int { return runtime.NumGoroutine() }

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		m.NoFile = fmt.Sprintf("%d soft, %d hard", rl.Cur, rl.Max)
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb float64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %f kB", &kb); err == nil {
			m.MemoryGiB = kb / (1 << 20)
		}
	}
	return m
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "%s\n%s · %d cores · %.0f GiB · nofile %s · load %s · %s\n\n", r.Command,
		r.Date.Format(time.RFC3339), r.Machine.Cores, r.Machine.MemoryGiB, r.Machine.NoFile, r.Machine.LoadAvg, r.Machine.Go)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s → %s (%s)\n", res.Scenario, res.Target, res.URL)
		row := func(k string, format string, v ...any) {
			fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{k}, v...)...)
		}
		srv := func(s ServerFigures, nodes []NodeFigures) {
			for _, n := range nodes {
				if n.Error != "" {
					row("node "+n.URL, "%s", n.Error)
					continue
				}
				row("node "+n.URL, "CPU %.0f %% of a core, RSS %.1f → %.1f MB", n.CPUPercent, n.RSSBeforeMB, n.RSSAfterMB)
			}
			if s.Error != "" {
				row("server", "%s", s.Error)
				return
			}
			if len(nodes) > 0 {
				row("servers RSS MB", "%.1f → %.1f, %d nodes summed (%s)", s.RSSBeforeMB, s.RSSAfterMB, len(nodes), s.Source)
			} else {
				row("server RSS MB", "%.1f → %.1f (%s)", s.RSSBeforeMB, s.RSSAfterMB, s.Source)
			}
			if s.GoroutinesAfter >= 0 {
				row("server goroutines", "%.0f → %.0f", s.GoroutinesBefore, s.GoroutinesAfter)
			}
		}
		switch {
		case res.Idle != nil:
			x := res.Idle
			row("connections", "%d of %d opened (%d failed) in %.1fs, %d procs, %d source addrs", x.Opened, x.Requested, x.Failed, x.OpenSeconds, x.Procs, x.Srcs)
			srv(x.Server, x.Nodes)
			row("RSS per connection", "%.2f KB", x.Server.RSSPerConnKB)
			row("goroutines per connection", "%.2f", x.Server.GoroutinesPerConn)
			row("idle CPU", "%.2f %% of a core over %.1fs", x.Server.CPUPercent, x.HoldSeconds)
			errRows(row, x.Errors)
		case res.Handshake != nil:
			x := res.Handshake
			kind := "new visitors (session + WebSocket)"
			if x.Mode == "reconnect" {
				kind = "returning visitors (WebSocket with a stored token)"
			}
			row("established", "%d in %.1fs (%d failed), %d dialers, %s", x.Established, x.Seconds, x.Failed, x.Dialers, kind)
			row("handshakes/s", "%.0f", x.PerSecond)
			if x.Mode == "reconnect" {
				row("frames replayed", "%d", x.Replayed)
			}
			latRow(row, x.Latency)
			srv(x.Server, x.Nodes)
			if x.Server.Error == "" {
				row("server CPU", "%.0f µs per handshake (%.0f %% of a core)", x.ServerCPUus, x.Server.CPUPercent)
			}
			row("client CPU", "%.0f µs per handshake (this process)", x.ClientCPUus)
			errRows(row, x.Errors)
		case res.Throughput != nil:
			x := res.Throughput
			mode := x.Mode + " loop"
			if x.Mode == "open" {
				mode += fmt.Sprintf(" at %.0f msg/s", x.TargetRate)
			}
			warm := ""
			if x.Warmup {
				warm = ", conversations open before the clock started"
			}
			row("load", "%s, %s, %d visitors → %d agents, %d idle connections held%s", x.Transport, mode, x.Visitors, x.Agents, x.IdleHeld, warm)
			row("messages", "sent %d, acked %d, refused %d, unanswered %d", x.Sent, x.Acked, x.Refused, x.Unanswered)
			row("delivered", "%d to every agent (%d receipts), lost %d", x.Delivered, x.Deliveries, x.Lost)
			row("duplicates, out of order", "%d, %d (agent frames received twice, or below the last id)", x.Duplicates, x.OutOfOrder)
			if x.Transport == "websocket" {
				row("agent reconnects", "%d (connections the server dropped, resumed from their cursor)", x.AgentReconnects)
			}
			row("messages/s", "%.0f over %.2fs", x.MessagesPerSec, x.Seconds)
			latRow(row, x.Latency)
			row("ack latency ms", "p50 %.2f  p95 %.2f  p99 %.2f  max %.2f  (send to its ack: durable)",
				x.AckLatency.P50MS, x.AckLatency.P95MS, x.AckLatency.P99MS, x.AckLatency.MaxMS)
			srv(x.Server, x.Nodes)
			if x.Server.Error == "" {
				row("server CPU", "%.0f %% of a core, %.0f µs per message", x.Server.CPUPercent, x.ServerCPUus)
			}
			row("client CPU", "%.0f µs per message (this process)", x.ClientCPUus)
			if s := x.Server; s.StoreCommits > 0 {
				row("store commits", "%.0f for %.0f writes (%.1f per commit)", s.StoreCommits, s.StoreWrites, s.StoreWrites/s.StoreCommits)
			}
			errRows(row, x.Errors)
		}
		fmt.Fprintln(tw)
	}
	for _, x := range r.Ratios {
		fmt.Fprintf(tw, "ratio %s\tkefu %.2f / reference %.2f = %.2f×\n", x.Figure, x.Kefu, x.Reference, x.Ratio)
	}
	for _, s := range r.Warnings {
		fmt.Fprintf(tw, "warning\t%s\n", s)
	}
	tw.Flush()
}

func latRow(row func(string, string, ...any), l Latency) {
	row("latency ms", "p50 %.2f  p95 %.2f  p99 %.2f  max %.2f  (n %d)", l.P50MS, l.P95MS, l.P99MS, l.MaxMS, l.Count)
}

func errRows(row func(string, string, ...any), m map[string]int) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		row("error", "%d× %s", m[k], k)
	}
}
