package node

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// failingListener answers Accept with the errors it is given, in turn.
type failingListener struct {
	net.Listener
	errs []error
}

func (l *failingListener) Accept() (net.Conn, error) {
	err := l.errs[0]
	l.errs = l.errs[1:]
	return nil, err
}

func TestCountingListenerCountsRefusedConnections(t *testing.T) {
	accept := func(errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	inner := &failingListener{errs: []error{accept(syscall.EMFILE), accept(syscall.ENFILE), accept(syscall.ECONNABORTED), net.ErrClosed}}
	reg := prometheus.NewRegistry()
	ln, err := newCountingListener(inner, reg)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := ln.Accept(); err == nil {
			t.Fatal("Accept: no error passed on")
		}
	}
	cl := ln.(countingListener)
	if got := counterValue(t, cl.refused.WithLabelValues(acceptOpenFileLimit)); got != 2 {
		t.Errorf("open_file_limit = %v, want 2 (EMFILE and ENFILE)", got)
	}
	// A closed listener is the server stopping, not a refusal.
	if got := counterValue(t, cl.refused.WithLabelValues(acceptOther)); got != 1 {
		t.Errorf("other = %v, want 1 (ECONNABORTED; not the close)", got)
	}
	if errors.Is(accept(syscall.EMFILE), net.ErrClosed) {
		t.Fatal("test set-up: EMFILE must not look like a close")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
