package bridge

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Delivery results, the values of the result label of
// kefu_messages_out_total.
const (
	ResultSent        = "sent"         // the provider accepted the message
	ResultFailed      = "failed"       // permanent failure: the message is marked failed
	ResultRetry       = "retry"        // transient failure: tried again later with backoff
	ResultRateLimited = "rate_limited" // the provider asked to wait (RetryAfter)
)

// Metrics holds the bridge's Prometheus collectors. A nil *Metrics is valid
// and records nothing, so components and tests can do without.
type Metrics struct {
	messagesIn       *prometheus.CounterVec
	messagesOut      *prometheus.CounterVec
	deliveryLatency  *prometheus.HistogramVec
	deliveryAttempts *prometheus.HistogramVec
	publishErrors    prometheus.Counter
	poisoned         *prometheus.CounterVec
}

// NewMetrics creates the bridge's collectors and registers them on reg.
// With a nil reg they are created but not registered. Registering on a
// registry that already has them (a second NewMetrics on the same registry)
// reuses the registered ones.
func NewMetrics(reg *prometheus.Registry) (*Metrics, error) {
	m := &Metrics{
		messagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kefu_messages_in_total",
			Help: "Customer messages received and committed, by channel instance.",
		}, []string{"channel"}),
		messagesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kefu_messages_out_total",
			Help: "Outbound delivery attempts by channel instance and result (sent, failed, retry, rate_limited).",
		}, []string{"channel", "result"}),
		deliveryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kefu_delivery_latency_seconds",
			Help:    "Time from an outbox entry's commit to the provider accepting it, by channel instance.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800},
		}, []string{"channel"}),
		deliveryAttempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kefu_delivery_attempts",
			Help:    "Attempts an outbox entry took until it was sent or failed permanently, by channel instance.",
			Buckets: []float64{1, 2, 3, 5, 8, 13, 21},
		}, []string{"channel"}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kefu_bus_publish_errors_total",
			Help: "Bus messages that could not be published (the store still has what they announced).",
		}),
		poisoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kefu_bus_poisoned_total",
			Help: "Bus messages moved to the poison topic after their handler failed, by handler.",
		}, []string{"handler"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	register := func(c prometheus.Collector) prometheus.Collector {
		if err := reg.Register(c); err != nil {
			if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
				return are.ExistingCollector
			}
			errs = append(errs, err)
		}
		return c
	}
	m.messagesIn = register(m.messagesIn).(*prometheus.CounterVec)
	m.messagesOut = register(m.messagesOut).(*prometheus.CounterVec)
	m.deliveryLatency = register(m.deliveryLatency).(*prometheus.HistogramVec)
	m.deliveryAttempts = register(m.deliveryAttempts).(*prometheus.HistogramVec)
	m.publishErrors = register(m.publishErrors).(prometheus.Counter)
	m.poisoned = register(m.poisoned).(*prometheus.CounterVec)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

// MessageIn counts a committed customer message on channel.
func (m *Metrics) MessageIn(channel string) {
	if m == nil {
		return
	}
	m.messagesIn.WithLabelValues(channel).Inc()
}

// messageOut counts one delivery attempt's result.
func (m *Metrics) messageOut(channel, result string) {
	if m == nil {
		return
	}
	m.messagesOut.WithLabelValues(channel, result).Inc()
}

// delivered records a finished entry: its latency (when sent) and attempts.
func (m *Metrics) delivered(channel string, latency time.Duration, attempts int, sent bool) {
	if m == nil {
		return
	}
	if sent {
		m.deliveryLatency.WithLabelValues(channel).Observe(latency.Seconds())
	}
	m.deliveryAttempts.WithLabelValues(channel).Observe(float64(attempts))
}

// publishError counts a failed bus publish.
func (m *Metrics) publishError() {
	if m == nil {
		return
	}
	m.publishErrors.Inc()
}

// poison counts a message moved to the poison topic.
func (m *Metrics) poison(handler string) {
	if m == nil {
		return
	}
	m.poisoned.WithLabelValues(handler).Inc()
}
