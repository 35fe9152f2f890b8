package node

import (
	"errors"
	"net"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
)

// countingListener counts the connections its Accept could not take. At the
// open-file limit the process's own metrics (process_open_fds,
// process_max_fds) vanish from /metrics, because reading them needs a file
// too; this counter is in memory and stays, so the refusals still show.
// net/http retries a failed Accept by itself.
type countingListener struct {
	net.Listener
	refused *prometheus.CounterVec
}

func newCountingListener(ln net.Listener, reg prometheus.Registerer) (net.Listener, error) {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kefu_accept_errors_total",
		Help: "Connections the listener could not accept, by reason: open_file_limit (the process or the system is out of file descriptors) or other.",
	}, []string{"reason"})
	// Both series from the start, so that an alert's increase() sees the
	// first refusal.
	refused.WithLabelValues(acceptOpenFileLimit)
	refused.WithLabelValues(acceptOther)
	if err := reg.Register(refused); err != nil {
		return nil, err
	}
	return countingListener{Listener: ln, refused: refused}, nil
}

const (
	acceptOpenFileLimit = "open_file_limit"
	acceptOther         = "other"
)

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		reason := acceptOther
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			reason = acceptOpenFileLimit
		}
		l.refused.WithLabelValues(reason).Inc()
	}
	return c, err
}
