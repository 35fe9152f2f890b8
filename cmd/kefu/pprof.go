//go:build pprof

// Profiling build (BENCHMARKS.md, "Profiling"): built with -tags pprof,
// kefu serves net/http/pprof on KEFU_PPROF_ADDR (a loopback address such
// as 127.0.0.1:6060) when that variable is set. Release builds leave this
// file out, so they carry no profiling endpoint at all.
//
// The block and mutex profiles are empty unless sampling is turned on, which
// costs time on every blocking event: KEFU_PPROF_BLOCK_RATE (nanoseconds, as
// runtime.SetBlockProfileRate; 1 records every event) and
// KEFU_PPROF_MUTEX_FRACTION (1 in N contended locks, as
// runtime.SetMutexProfileFraction).

package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"time"
)

func init() {
	addr := os.Getenv("KEFU_PPROF_ADDR")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "kefu: KEFU_PPROF_ADDR must be a loopback host:port like 127.0.0.1:6060, got %q\n", addr)
		os.Exit(2)
	}
	for _, v := range []struct {
		name string
		set  func(int)
	}{
		{"KEFU_PPROF_BLOCK_RATE", runtime.SetBlockProfileRate},
		{"KEFU_PPROF_MUTEX_FRACTION", func(n int) { runtime.SetMutexProfileFraction(n) }},
	} {
		s := os.Getenv(v.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "kefu: %s must be a whole number ≥ 0, got %q\n", v.name, s)
			os.Exit(2)
		}
		v.set(n)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kefu: KEFU_PPROF_ADDR: %v\n", err)
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Fprintf(os.Stderr, "kefu: pprof on http://%s/debug/pprof/\n", ln.Addr())
}
