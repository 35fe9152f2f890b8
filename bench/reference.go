package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// refServer is the reference: a bare gorilla/websocket relay speaking just
// enough of the protocol for the bench's client (session, login, hello →
// welcome + synced, send → ack, and the message relayed to every agent).
// No persistence, no auth, no routing: the ceiling of this machine.
type refServer struct {
	up      websocket.Upgrader
	ids     atomic.Int64
	mu      sync.RWMutex
	agents  map[*refConn]struct{}
	started time.Time
}

type refConn struct {
	ws *websocket.Conn
	mu sync.Mutex
}

func (c *refConn) write(m *websocket.PreparedMessage) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WritePreparedMessage(m)
}

func (c *refConn) writeBytes(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// NewReferenceHandler returns the reference relay's HTTP handler.
func NewReferenceHandler() http.Handler {
	rs := &refServer{agents: map[*refConn]struct{}{}, started: time.Now(),
		up: websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, WriteBufferPool: &sync.Pool{},
			CheckOrigin: func(*http.Request) bool { return true }}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/visitor/session", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		id := rs.ids.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token":"ref%d","visitor":{"id":"a:%d","verified":false},"conversation":null,"last_seq":0,"ping_interval_ms":25000,"long_poll_timeout_ms":25000,"max_frame_bytes":65536}`, id, id)
	})
	mux.HandleFunc("POST /api/v1/auth/login", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token":"refa%d","agent":{"id":1}}`, rs.ids.Add(1))
	})
	mux.HandleFunc("GET /ws/visitor", func(w http.ResponseWriter, r *http.Request) { rs.serveWS(w, r, false) })
	mux.HandleFunc("GET /ws/agent", func(w http.ResponseWriter, r *http.Request) { rs.serveWS(w, r, true) })
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "go_goroutines %d\n", goroutines())
		if rss, cpu, err := procStat(os.Getpid()); err == nil {
			fmt.Fprintf(w, "process_resident_memory_bytes %g\nprocess_cpu_seconds_total %g\n", rss, cpu)
		}
	})
	return mux
}

func (rs *refServer) serveWS(w http.ResponseWriter, r *http.Request, agent bool) {
	ws, err := rs.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &refConn{ws: ws}
	defer ws.Close()
	ws.SetReadLimit(64 << 10)
	if _, _, err := ws.ReadMessage(); err != nil { // hello
		return
	}
	if agent {
		_ = c.writeBytes([]byte(`{"type":"welcome","agent":{"id":1},"ping_interval_ms":25000,"max_frame_bytes":65536}`))
		_ = c.writeBytes([]byte(`{"type":"synced","cursor":` + strconv.FormatInt(rs.ids.Load(), 10) + `}`))
		rs.mu.Lock()
		rs.agents[c] = struct{}{}
		rs.mu.Unlock()
		defer func() { rs.mu.Lock(); delete(rs.agents, c); rs.mu.Unlock() }()
	} else {
		_ = c.writeBytes([]byte(`{"type":"welcome","visitor":{"id":"a:0"},"ping_interval_ms":25000,"max_frame_bytes":65536}`))
		_ = c.writeBytes([]byte(`{"type":"synced","conversation_id":0,"last_seq":0}`))
	}
	var f struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Text string `json:"text"`
	}
	var out []byte
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		f.Type, f.ID, f.Text = "", "", ""
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		switch f.Type {
		case "ping":
			_ = c.writeBytes([]byte(`{"type":"pong"}`))
		case "send":
			if agent {
				continue
			}
			id := rs.ids.Add(1)
			msg, _ := json.Marshal(map[string]any{"id": id, "conversation_id": 1, "seq": id, "sender_kind": "contact", "kind": "text", "text": f.Text, "status": "sent", "created_at": time.Now()})
			out = append(out[:0], `{"type":"message","message":`...)
			out = append(append(out, msg...), '}')
			pm, err := websocket.NewPreparedMessage(websocket.TextMessage, out)
			if err == nil {
				rs.mu.RLock()
				for a := range rs.agents {
					_ = a.write(pm)
				}
				rs.mu.RUnlock()
			}
			idj, _ := json.Marshal(f.ID)
			out = append(out[:0], `{"type":"ack","id":`...)
			out = append(append(append(out, idj...), `,"message":`...), msg...)
			out = append(out, `,"duplicate":false}`...)
			_ = c.writeBytes(out)
		}
	}
}

// referenceServer is `kefu bench reference-server -addr ADDR`: serve the
// reference, print "listening http://ADDR", stop when stdin closes.
func referenceServer(ctx context.Context, cfg Config, stdout, stderr io.Writer) int {
	ln, err := net.Listen("tcp", cfg.RefAddr)
	if err != nil {
		fmt.Fprintln(stderr, "bench reference-server:", err)
		return 1
	}
	srv := &http.Server{Handler: NewReferenceHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Fprintf(stdout, "listening http://%s\n", ln.Addr())
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-ctx.Done():
	case <-done:
	}
	_ = srv.Close()
	return 0
}

// startReference starts `kefu bench reference-server` in its own process
// and returns its URL, pid and a stop function.
func startReference(ctx context.Context, stderr io.Writer) (url string, pid int, stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "bench", "reference-server", "-addr", "127.0.0.1:0")
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", 0, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop = func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), "listening ") {
		stop()
		return "", 0, nil, fmt.Errorf("bench: the reference server did not start (is this the kefu binary?)")
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return strings.TrimPrefix(sc.Text(), "listening "), cmd.Process.Pid, stop, nil
}
