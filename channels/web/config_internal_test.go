package web

import (
	"strings"
	"testing"
)

// TestSendQueuePerAudience: agents' connections take agent_send_queue,
// visitors' send_queue, and both are validated.
func TestSendQueuePerAudience(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if got := c.sendQueue(audVisitor); got != 256 {
		t.Errorf("visitor queue = %d, want send_queue 256", got)
	}
	if got := c.sendQueue(audAgent); got != 8192 {
		t.Errorf("agent queue = %d, want agent_send_queue 8192", got)
	}

	for _, tc := range []struct {
		name  string
		agent int
		want  string // "" = valid
	}{
		{"smallest", 8, ""},
		{"largest", maxAgentSendQueue, ""},
		{"too small", 7, "agent_send_queue: must be between 8 and 1048576"},
		{"zero", 0, "agent_send_queue: must be between 8 and 1048576"},
		{"too large", maxAgentSendQueue + 1, "agent_send_queue: must be between 8 and 1048576"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			c.AgentSendQueue = tc.agent
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("agent_send_queue %d: %v", tc.agent, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("agent_send_queue %d: error %v, want %q", tc.agent, err, tc.want)
			case tc.want == "" && c.sendQueue(audAgent) != tc.agent:
				t.Errorf("agent queue = %d, want %d", c.sendQueue(audAgent), tc.agent)
			}
		})
	}
}
