package web

import "github.com/prometheus/client_golang/prometheus"

// connectionsDesc is the gauge of the visitors' and agents' connections
// (WebSockets and long polls waiting) this node holds for the instance.
var connectionsDesc = prometheus.NewDesc("kefu_web_connections",
	"Connections this node holds for a web channel instance (WebSockets and waiting long polls), by audience.",
	[]string{"channel", "audience"}, nil)

// Describe and Collect make the channel a prometheus.Collector: the node
// registers it, and /metrics reads the hub's counts when scraped.
func (c *Channel) Describe(ch chan<- *prometheus.Desc) { ch <- connectionsDesc }

func (c *Channel) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(c.rt.hub.nVisitors.Load()), c.name, "visitor")
	ch <- prometheus.MustNewConstMetric(connectionsDesc, prometheus.GaugeValue, float64(c.rt.hub.nAgents.Load()), c.name, "agent")
}

var _ prometheus.Collector = (*Channel)(nil)
