package push

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the Fallbacks do, by pusher (push.NAME). A nil
// *Metrics counts nothing; For gives one pusher's view.
type Metrics struct {
	results   *prometheus.CounterVec
	skips     *prometheus.CounterVec
	unhealthy *prometheus.GaugeVec
	pusher    string // For's name; "" in NewMetrics's result
}

// NewMetrics registers the push metrics with reg:
//
//	kefu_push_notifications_total{pusher,result}  sent, retry, gone (token removed), auth (credentials refused), failed, error (kefu's side)
//	kefu_push_skipped_total{pusher,reason}        acked (acknowledged in time), seen, no_device, no_recipient, superseded (a newer message for the conversation went instead)
//	kefu_push_unhealthy{pusher}                   1 while the provider refuses kefu's credentials
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kefu_push_notifications_total", Help: "Push attempts by pusher (push.NAME) and result.",
		}, []string{"pusher", "result"}),
		skips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kefu_push_skipped_total", Help: "Pushes not sent, by pusher (push.NAME) and reason.",
		}, []string{"pusher", "reason"}),
		unhealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kefu_push_unhealthy", Help: "1 while the push provider refuses kefu's credentials, by pusher (push.NAME).",
		}, []string{"pusher"}),
	}
	for _, c := range []prometheus.Collector{m.results, m.skips, m.unhealthy} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("push: register metrics: %w", err)
		}
	}
	return m, nil
}

// For returns the metrics of the pusher called name (push.NAME), its
// unhealthy gauge at 0.
func (m *Metrics) For(name string) *Metrics {
	if m == nil {
		return nil
	}
	v := *m
	v.pusher = name
	v.unhealthy.WithLabelValues(name).Set(0)
	return &v
}

func (m *Metrics) result(r string) {
	if m != nil {
		m.results.WithLabelValues(m.pusher, r).Inc()
	}
}

func (m *Metrics) skipped(reason string) {
	if m != nil {
		m.skips.WithLabelValues(m.pusher, reason).Inc()
	}
}

func (m *Metrics) setUnhealthy(v bool) {
	if m == nil {
		return
	}
	g := m.unhealthy.WithLabelValues(m.pusher)
	if v {
		g.Set(1)
	} else {
		g.Set(0)
	}
}
