package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kefuhq/kefu/adapters/store/sqlite"
	"github.com/kefuhq/kefu/channels/webhook"
	"github.com/kefuhq/kefu/channels/webhook/webhooktest"
	"github.com/kefuhq/kefu/core"
)

// TestCrashLosesNothing runs kefu as a child process, streams messages into
// it from many concurrent senders, kills it with SIGKILL mid-stream, and
// starts it again on the same files. Every message acknowledged before the
// kill must be stored exactly once with gapless sequence numbers, and the
// outbound replies committed but not delivered before the kill must be
// delivered after the restart.
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildKefu(t)
	dir := t.TempDir()
	const secret = "crash-test-secret"
	rcv := webhooktest.NewReceiver(secret)
	defer rcv.Close()
	rcv.Block() // replies hang: every offline reply is still in the outbox at the kill

	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "kefu.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`
server: {addr: %q}
store: {driver: sqlite, dsn: %q, sync: normal}
media: {dir: %q}
log: {level: warn}
routing: {offline_reply: "We are away."}
channels:
  crm: {type: webhook, enabled: true, secret: %q, deliver_url: %q, timeout: 30s}
`, addr, filepath.Join(dir, "kefu.db"), filepath.Join(dir, "media"), secret, rcv.URL))
	base := "http://" + addr

	first := startKefu(t, bin, cfgPath, base)

	// Many concurrent senders, each a customer sending numbered messages.
	const senders = 32
	var (
		mu    sync.Mutex
		acked = map[string]bool{} // message ids answered 200
	)
	ctx, stopSending := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ctx.Err() == nil; j++ {
				id := fmt.Sprintf("c%02d-%05d", s, j)
				resp, err := webhooktest.Post(client, base+"/webhooks/crm", secret,
					webhook.Inbound{ID: id, From: fmt.Sprintf("cust-%02d", s), Text: id})
				if err != nil {
					return // the server died
				}
				ok := resp.StatusCode == http.StatusOK
				resp.Body.Close()
				if ok {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				}
			}
		}()
	}
	// Kill once a good stream is flowing.
	waitUntil(t, 30*time.Second, "acknowledged messages before the kill", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 1500
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	stopSending()
	wg.Wait()
	if n := len(rcv.Delivered()); n != 0 {
		t.Fatalf("%d replies delivered before the kill; the receiver was blocked", n)
	}
	t.Logf("killed with %d acknowledged messages", len(acked))

	// Restart on the same files with the receiver answering.
	rcv.Unblock()
	second := startKefu(t, bin, cfgPath, base)
	customers := map[string]bool{}
	for id := range acked {
		customers["cust-"+id[1:3]] = true
	}
	// Each conversation's offline reply was committed with its first message,
	// so every customer with an acknowledged message gets exactly one.
	waitUntil(t, 60*time.Second, "an offline reply for every customer", func() bool {
		to := map[string]bool{}
		for _, d := range rcv.Delivered() {
			to[d.To] = true
		}
		for c := range customers {
			if !to[c] {
				return false
			}
		}
		return true
	})
	got := rcv.Delivered()
	if err := second.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	replies := map[string]int{}
	for _, d := range got {
		replies[d.To]++
	}
	for c := range customers {
		if replies[c] != 1 {
			t.Errorf("%s got %d offline replies after the restart, want 1", c, replies[c])
		}
	}

	// Read the files the processes left behind.
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(dir, "kefu.db"), Sync: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bg := context.Background()
	convs, err := st.Conversations(bg, core.ConversationFilter{Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]int{}
	for _, c := range convs {
		ms, err := st.Messages(bg, core.MessageQuery{ConversationID: c.ID, Limit: 1000})
		for err == nil && len(ms) > 0 {
			for i, m := range ms {
				if want := ms[0].Seq + int64(i); m.Seq != want {
					t.Fatalf("conversation #%d: seq %d where %d was expected (gap or duplicate)", c.ID, m.Seq, want)
				}
				if m.SenderKind == core.SenderContact {
					stored[m.Text]++
				}
			}
			last := ms[len(ms)-1].Seq
			ms, err = st.Messages(bg, core.MessageQuery{ConversationID: c.ID, AfterSeq: last, Limit: 1000})
			if err == nil && len(ms) > 0 && ms[0].Seq != last+1 {
				t.Fatalf("conversation #%d: seq jumps from %d to %d", c.ID, last, ms[0].Seq)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for id := range acked {
		if stored[id] != 1 {
			t.Errorf("acknowledged message %s stored %d times, want 1", id, stored[id])
		}
	}
	if depth, _, err := st.OutboxStats(bg); err != nil || depth != 0 {
		t.Errorf("outbox depth after restart = %d (%v), want 0", depth, err)
	}
}

// buildKefu compiles the binary under test.
func buildKefu(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kefu")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startKefu runs `kefu serve -c cfg` and waits until it is ready.
func startKefu(t *testing.T, bin, cfg, base string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "serve", "-c", cfg)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("kefu output:\n%s", logs.String())
		}
	})
	waitUntil(t, 30*time.Second, "kefu ready", func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return cmd
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
