package web_test

import (
	"strings"
	"testing"

	"github.com/kefuhq/kefu/config"
)

// TestOneWebChannel: every web channel would serve the same fixed paths,
// so a second enabled one is a config error (it made serve panic), not a
// clash found at start.
func TestOneWebChannel(t *testing.T) {
	env := func(string) (string, bool) { return "", false }
	_, err := config.Parse("two.yaml", []byte("channels:\n  web: {enabled: true}\n  shop: {type: web, enabled: true}\n"), env)
	if err == nil || !strings.Contains(err.Error(), "two.yaml:2: channels.web: only one channel of type web may be enabled, and shop is") {
		t.Errorf("two web channels: %v", err)
	}
	if _, err := config.Parse("one.yaml", []byte("channels:\n  web: {enabled: true}\n  shop: {type: web, enabled: false}\n"), env); err != nil {
		t.Errorf("one enabled, one disabled: %v", err)
	}
}
