package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// childReport is what an idle child prints once its connections are open.
type childReport struct {
	Opened int            `json:"opened"`
	Failed int            `json:"failed"`
	Errors map[string]int `json:"errors,omitempty"`
}

// spawnIdle re-executes this binary as cfg.Procs `bench idle-child`
// processes sharing cfg.Conns connections, each on its own source
// addresses; it returns once every child has reported, and release ends
// them.
func spawnIdle(ctx context.Context, cfg Config, url string) (opened, failed int, errs map[string]int, release func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, 0, nil, nil, err
	}
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
	}
	var kids []child
	release = func() {
		for _, k := range kids {
			k.stdin.Close()
		}
		for _, k := range kids {
			done := make(chan struct{})
			go func() { _ = k.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = k.cmd.Process.Kill()
				<-done
			}
		}
	}
	reports := make(chan childReport, cfg.Procs)
	errs = map[string]int{}
	for p := 0; p < cfg.Procs; p++ {
		n := cfg.Conns / cfg.Procs
		if p < cfg.Conns%cfg.Procs {
			n++
		}
		cmd := exec.CommandContext(ctx, exe, "bench", "idle-child", "-url", url, "-n", strconv.Itoa(n),
			"-c", strconv.Itoa(cfg.Dialers), "-srcs", strconv.Itoa(cfg.Srcs), "-src-offset", strconv.Itoa(p*cfg.Srcs))
		cmd.Stderr = os.Stderr
		stdin, err1 := cmd.StdinPipe()
		stdout, err2 := cmd.StdoutPipe()
		if err1 != nil || err2 != nil {
			release()
			return 0, 0, nil, nil, fmt.Errorf("bench: child pipes: %v %v", err1, err2)
		}
		if err := cmd.Start(); err != nil {
			release()
			return 0, 0, nil, nil, fmt.Errorf("bench: start child: %w", err)
		}
		kids = append(kids, child{cmd, stdin})
		go func() {
			var r childReport
			sc := bufio.NewScanner(stdout)
			if !sc.Scan() || json.Unmarshal(sc.Bytes(), &r) != nil {
				r = childReport{Failed: n, Errors: map[string]int{"child process failed": 1}}
			}
			reports <- r
			_, _ = io.Copy(io.Discard, stdout)
		}()
	}
	for range kids {
		select {
		case r := <-reports:
			opened += r.Opened
			failed += r.Failed
			for k, v := range r.Errors {
				errs[k] += v
			}
		case <-ctx.Done():
			release()
			return 0, 0, nil, nil, ctx.Err()
		}
	}
	return opened, failed, errs, release, nil
}

// idleChild is `kefu bench idle-child`: open the connections (spread over
// the -url list), print a
// childReport line, hold them until stdin closes.
func idleChild(ctx context.Context, cfg Config, stdout io.Writer) int {
	var clients []*client // one per server (-url a,b,c), connections round-robin
	for _, u := range cfg.URLs {
		clients = append(clients, newClient(u, cfg.Srcs, cfg.SrcOffset))
	}
	var errs errCounts
	cs := openMany(ctx, clients, cfg.Conns, cfg.Dialers, &errs)
	b, _ := json.Marshal(childReport{Opened: len(cs), Failed: cfg.Conns - len(cs), Errors: errs.snapshot()})
	fmt.Fprintf(stdout, "%s\n", b)
	_, _ = io.Copy(io.Discard, os.Stdin)
	closeAll(cs)
	return 0
}
