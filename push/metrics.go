package push

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the Fallback does. A nil *Metrics counts nothing.
type Metrics struct {
	results   *prometheus.CounterVec
	skips     *prometheus.CounterVec
	unhealthy prometheus.Gauge
}

// NewMetrics registers the push metrics with reg:
//
//	kefu_push_notifications_total{result}  sent, retry, gone (token removed), auth (credentials refused), failed, error (kefu's side)
//	kefu_push_skipped_total{reason}        acked (acknowledged in time), seen, no_device, no_recipient
//	kefu_push_unhealthy                    1 while the provider refuses kefu's credentials
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kefu_push_notifications_total", Help: "Push attempts by result.",
		}, []string{"result"}),
		skips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kefu_push_skipped_total", Help: "Pushes not sent, by reason.",
		}, []string{"reason"}),
		unhealthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kefu_push_unhealthy", Help: "1 while the push provider refuses kefu's credentials.",
		}),
	}
	for _, c := range []prometheus.Collector{m.results, m.skips, m.unhealthy} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("push: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *Metrics) result(r string) {
	if m != nil {
		m.results.WithLabelValues(r).Inc()
	}
}

func (m *Metrics) skipped(reason string) {
	if m != nil {
		m.skips.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) setUnhealthy(v bool) {
	if m == nil {
		return
	}
	if v {
		m.unhealthy.Set(1)
	} else {
		m.unhealthy.Set(0)
	}
}
