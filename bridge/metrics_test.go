package bridge_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kefuhq/kefu/bridge"
)

// metricValue returns a counter's value, or a histogram's sample count, of
// the series of name with the given labels (0 when absent).
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

func TestMetricsNilIsSafe(t *testing.T) {
	var m *bridge.Metrics
	m.MessageIn("web") // must not panic
}

func TestMetricsRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := bridge.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bridge.NewMetrics(reg)
	if err != nil {
		t.Fatalf("second NewMetrics on one registry: %v", err)
	}
	a.MessageIn("web")
	b.MessageIn("web")
	if got := metricValue(t, reg, "kefu_messages_in_total", map[string]string{"channel": "web"}); got != 2 {
		t.Errorf("kefu_messages_in_total = %v, want 2 (both share the registered collector)", got)
	}
	if _, err := bridge.NewMetrics(nil); err != nil {
		t.Errorf("NewMetrics(nil): %v", err)
	}
}
