package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serverSample is the server process's state at one moment.
type serverSample struct {
	At         time.Time
	RSS        float64 // bytes
	CPU        float64 // seconds of CPU (user + system)
	Goroutines float64 // -1: unknown
	Source     string  // "/proc" or "/metrics"
	// The store's commits and the writes they held (kefu_store_*_total,
	// SQLite); -1: unknown.
	Commits, Writes float64
}

// sampler reads the server's figures from /proc/<pid> when pid is set,
// and from its /metrics otherwise (goroutines always come from /metrics
// when it answers).
type sampler struct {
	base string
	pid  int
	http *http.Client
}

func (s *sampler) sample(ctx context.Context) (serverSample, error) {
	out := serverSample{At: time.Now(), Goroutines: -1, Commits: -1, Writes: -1}
	m, merr := s.metrics(ctx)
	if v, ok := m["go_goroutines"]; ok {
		out.Goroutines = v
	}
	c, ok1 := m["kefu_store_commits_total"]
	w, ok2 := m["kefu_store_writes_total"]
	if ok1 && ok2 {
		out.Commits, out.Writes = c, w
	}
	if s.pid > 0 {
		rss, cpu, err := procStat(s.pid)
		if err != nil {
			return out, err
		}
		out.RSS, out.CPU, out.Source = rss, cpu, "/proc"
		return out, nil
	}
	if merr != nil {
		return out, fmt.Errorf("server figures: no -pid and /metrics: %w", merr)
	}
	rss, ok1 := m["process_resident_memory_bytes"]
	cpu, ok2 := m["process_cpu_seconds_total"]
	if !ok1 || !ok2 {
		return out, fmt.Errorf("server figures: /metrics has no process collector; give -pid")
	}
	out.RSS, out.CPU, out.Source = rss, cpu, "/metrics"
	return out, nil
}

// metrics reads the unlabelled samples of the server's /metrics.
func (s *sampler) metrics(ctx context.Context) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(bufio.NewScanner(resp.Body))
}

func parseMetrics(sc *bufio.Scanner) (map[string]float64, error) {
	out := map[string]float64{}
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.ContainsRune(name, '{') {
			continue
		}
		if v, err := strconv.ParseFloat(strings.Fields(val)[0], 64); err == nil {
			out[name] = v
		}
	}
	return out, sc.Err()
}

// procStat reads a process's resident memory (bytes) and CPU time
// (seconds) from /proc.
func procStat(pid int) (rss, cpu float64, err error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name (which may hold spaces) start at ") ".
	s := string(st)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	// f[0] is field 3 (state): utime is field 14, stime 15, rss 24.
	ut, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	pages, _ := strconv.ParseFloat(f[21], 64)
	const clkTck = 100 // USER_HZ on Linux
	return pages * float64(os.Getpagesize()), (ut + stime) / clkTck, nil
}

// processCPU is the CPU time this process has used (user and system), or
// -1 if it cannot be read.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
