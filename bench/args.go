package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config is a parsed `kefu bench` command line.
type Config struct {
	Scenario string
	URL      string // the kefu server, e.g. http://127.0.0.1:8080 (the first of URLs)
	JSON     string // write the report here as JSON too
	PID      int    // the server's process id (0: read /metrics; the first of PIDs)

	// URLs are the servers the load is spread over: the nodes of one
	// cluster (-url a,b,c). Visitors go round-robin over them and agent
	// connections too, so messages cross nodes.
	URLs []string
	// PIDs are the servers' process ids, one per URL in the same order
	// (-pid 1,2,3), or none: each server's figures then come from its
	// /metrics.
	PIDs []int

	Conns     int           // idle: connections to open
	Procs     int           // idle: client processes
	Srcs      int           // loopback source addresses 127.0.0.1.. to spread over
	SrcOffset int           // idle-child: first source address (0: 127.0.0.1)
	Dialers   int           // concurrent dialers while opening connections
	Hold      time.Duration // idle: how long to hold (idle CPU is measured over it)
	Settle    time.Duration // idle: wait after opening before sampling RSS
	Duration  time.Duration // handshake: how long to run
	Reconnect bool          // handshake: returning visitors (stored token, no session request)

	Visitors int           // throughput, longpoll: visitors sending
	Agents   int           // throughput, longpoll: agent connections receiving
	Messages int           // throughput, longpoll: messages to send in all
	Rate     float64       // messages/s, open loop; 0: closed loop
	Window   int           // closed loop: messages in flight per visitor
	Size     int           // bytes of text per message
	Idle     int           // throughput: idle visitor connections held during the run
	Warmup   bool          // throughput, longpoll: open every visitor's conversation before the clock starts
	Drain    time.Duration // how long to wait for the last acks and deliveries

	Email    string // agent login
	Password string

	Scenarios []string // reference: which scenarios to run against both
	RefAddr   string   // reference-server: listen address
}

var scenarios = []string{"idle", "handshake", "throughput", "longpoll", "reference"}

func defaultConfig() Config {
	return Config{
		Conns: 1000, Procs: 1, Srcs: 1, Dialers: 50, Hold: 5 * time.Second, Settle: 2 * time.Second,
		Duration: 5 * time.Second, Visitors: 50, Agents: 1, Messages: 10000, Window: 1, Size: 100,
		Drain: 15 * time.Second, Scenarios: []string{"handshake", "throughput"}, RefAddr: "127.0.0.1:0",
	}
}

// Parse reads `kefu bench <scenario> [flags]` (the arguments after
// "bench").
func Parse(args []string, stderr io.Writer) (Config, error) {
	c := defaultConfig()
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return c, errors.New("bench: name a scenario: " + strings.Join(scenarios, ", "))
	}
	c.Scenario, args = args[0], args[1:]
	known := c.Scenario == "reference-server" || c.Scenario == "idle-child"
	for _, s := range scenarios {
		known = known || s == c.Scenario
	}
	if !known {
		return c, fmt.Errorf("bench: unknown scenario %q (want one of %s)", c.Scenario, strings.Join(scenarios, ", "))
	}
	fs := flag.NewFlagSet("bench "+c.Scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.URL, "url", "", "the kefu server's base URL, e.g. http://127.0.0.1:8080 (required); a comma-separated list spreads the load over a cluster's nodes")
	fs.StringVar(&c.JSON, "json", "", "also write the report as JSON to this file")
	var pids string
	fs.StringVar(&pids, "pid", "", "the server's process id, for RSS and CPU from /proc (default: its /metrics); with several -url, one per URL, comma-separated")
	fs.IntVar(&c.Conns, "n", c.Conns, "idle: WebSocket connections to open")
	fs.IntVar(&c.Procs, "procs", c.Procs, "idle: client processes to spread the connections over (one process holds at most the open-file limit)")
	fs.IntVar(&c.Srcs, "srcs", c.Srcs, "loopback source addresses 127.0.0.1… to spread connections over (loopback servers only)")
	fs.IntVar(&c.SrcOffset, "src-offset", 0, "idle-child: first source address after 127.0.0.1 (internal)")
	fs.IntVar(&c.Dialers, "c", c.Dialers, "concurrent dialers (idle, handshake)")
	fs.DurationVar(&c.Hold, "hold", c.Hold, "idle: how long to hold the connections (idle CPU is measured over it)")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "idle: wait after opening before sampling the server; throughput, longpoll with -warmup: wait after the warm-up")
	fs.DurationVar(&c.Duration, "d", c.Duration, "handshake: how long to run")
	fs.BoolVar(&c.Reconnect, "reconnect", false, "handshake: returning visitors, as a widget after a dropped socket: each dialer starts one session with a conversation, then reconnects with its token, conversation and last seq (no session request per handshake)")
	fs.IntVar(&c.Visitors, "visitors", c.Visitors, "throughput, longpoll: visitors sending")
	fs.IntVar(&c.Agents, "agents", c.Agents, "throughput, longpoll: agent connections receiving (each receives every message)")
	fs.IntVar(&c.Messages, "m", c.Messages, "throughput, longpoll: messages to send in all")
	fs.Float64Var(&c.Rate, "rate", 0, "messages/s in all, open loop (0: closed loop at max)")
	fs.IntVar(&c.Window, "window", c.Window, "closed loop: messages in flight per visitor")
	fs.IntVar(&c.Size, "size", c.Size, "bytes of text per message")
	fs.IntVar(&c.Idle, "idle", 0, "throughput: idle visitor connections held during the run")
	fs.BoolVar(&c.Warmup, "warmup", false, "throughput, longpoll: each visitor first starts its conversation (one message, acked, not counted) and the clock starts -settle later: the run measures messages in open conversations only")
	fs.DurationVar(&c.Drain, "drain", c.Drain, "how long to wait for the last acks and deliveries")
	fs.StringVar(&c.Email, "agent-email", "", "agent login email (throughput, longpoll)")
	fs.StringVar(&c.Password, "agent-password", "", "agent login password")
	var sc string
	fs.StringVar(&sc, "scenarios", strings.Join(c.Scenarios, ","), "reference: scenarios to run against kefu and the reference (handshake, throughput, idle)")
	fs.StringVar(&c.RefAddr, "addr", c.RefAddr, "reference-server: listen address")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	if err := c.parsePIDs(pids); err != nil {
		return c, err
	}
	c.Scenarios = nil
	for _, s := range strings.Split(sc, ",") {
		switch s = strings.TrimSpace(s); s {
		case "":
		case "handshake", "throughput", "idle":
			c.Scenarios = append(c.Scenarios, s)
		default:
			return c, fmt.Errorf("bench: -scenarios: %q cannot run against the reference (handshake, throughput, idle)", s)
		}
	}
	return c, c.check()
}

func (c *Config) check() error {
	if c.Scenario == "reference-server" {
		return nil
	}
	c.URLs = nil
	for _, s := range strings.Split(c.URL, ",") {
		u, err := url.Parse(s)
		if s == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("bench: -url must be the server's base URL like http://127.0.0.1:8080 (or a comma-separated list of them), got %q", c.URL)
		}
		c.URLs = append(c.URLs, strings.TrimRight(s, "/"))
	}
	c.URL = c.URLs[0]
	var errs []error
	if len(c.PIDs) > 0 && len(c.PIDs) != len(c.URLs) {
		errs = append(errs, fmt.Errorf("bench: -pid gives %d process ids for %d -url servers: give one per server, in the same order, or none", len(c.PIDs), len(c.URLs)))
	}
	if len(c.URLs) > 1 && c.Scenario == "reference" {
		errs = append(errs, errors.New("bench: reference compares one server with the reference relay: give one -url"))
	}
	pos := func(name string, v int) {
		if v < 1 {
			errs = append(errs, fmt.Errorf("bench: %s must be at least 1", name))
		}
	}
	pos("-n", c.Conns)
	pos("-procs", c.Procs)
	pos("-srcs", c.Srcs)
	pos("-c", c.Dialers)
	pos("-visitors", c.Visitors)
	pos("-agents", c.Agents)
	pos("-m", c.Messages)
	pos("-window", c.Window)
	if c.Srcs > 254 {
		errs = append(errs, errors.New("bench: -srcs must be at most 254"))
	}
	if c.Size < 16 || c.Size > 16000 {
		errs = append(errs, errors.New("bench: -size must be between 16 and 16000"))
	}
	if c.Rate < 0 || c.Idle < 0 {
		errs = append(errs, errors.New("bench: -rate and -idle must not be negative"))
	}
	needAgent := c.Scenario == "throughput" || c.Scenario == "longpoll" ||
		(c.Scenario == "reference" && contains(c.Scenarios, "throughput"))
	if needAgent && (c.Email == "" || c.Password == "") {
		errs = append(errs, errors.New("bench: "+c.Scenario+" needs -agent-email and -agent-password (an agent of the server)"))
	}
	return errors.Join(errs...)
}

// parsePIDs reads -pid: empty, one process id, or a comma-separated list.
func (c *Config) parsePIDs(s string) error {
	c.PIDs, c.PID = nil, 0
	if s == "" {
		return nil
	}
	for _, f := range strings.Split(s, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid < 1 {
			return fmt.Errorf("bench: -pid must be a process id or a comma-separated list of them, got %q", s)
		}
		c.PIDs = append(c.PIDs, pid)
	}
	c.PID = c.PIDs[0]
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
