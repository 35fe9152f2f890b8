//go:build unix

package bench

import (
	"context"
	"net"
	"syscall"
	"testing"
)

// The bench dials without TCP keep-alive: its setsockopt calls would be
// client CPU taken from the server under test.
func TestDialWithoutKeepAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if cn, err := ln.Accept(); err == nil {
			defer cn.Close()
			_, _ = cn.Read(make([]byte, 1))
		}
	}()
	c := newClient("http://"+ln.Addr().String(), 1, 0)
	cn, err := c.netDial(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	raw, err := cn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		on, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	if on != 0 {
		t.Errorf("SO_KEEPALIVE = %d on a bench connection, want 0", on)
	}
}
