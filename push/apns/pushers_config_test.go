package apns_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/config"
	"github.com/kefuhq/kefu/push/apns/apnstest"
)

// One pusher per app: two apps (a customers' app and an agents' app) are
// a valid configuration; two enabled pushers for the same app are not
// (each device would be pushed twice); a disabled one is left alone.
func TestOnePusherPerApp(t *testing.T) {
	pemBytes, _, err := apnstest.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	kf := filepath.Join(t.TempDir(), "AuthKey_ABC123DEFG.p8")
	if err := os.WriteFile(kf, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	section := func(name, topic string, enabled bool) string {
		e := "true"
		if !enabled {
			e = "false"
		}
		return "  " + name + ": {type: apns, enabled: " + e + ", key_file: " + kf + ", key_id: ABC123DEFG, team_id: TEAM123456, topic: " + topic + "}\n"
	}
	parse := func(y string) error {
		_, err := config.Parse("kefu.yaml", []byte("push:\n"+y), func(string) (string, bool) { return "", false })
		return err
	}
	if err := parse(section("customers", "com.shop.app", true) + section("agents", "com.shop.agents", true)); err != nil {
		t.Errorf("two apps: %v", err)
	}
	if err := parse(section("customers", "com.shop.app", true) + section("old", "com.shop.app", false)); err != nil {
		t.Errorf("a disabled second pusher for the app: %v", err)
	}
	err = parse(section("customers", "com.shop.app", true) + section("again", "com.shop.app", true))
	if err == nil || !strings.Contains(err.Error(), "push.customers.topic: push.again pushes for com.shop.app already") {
		t.Errorf("two pushers for one app: %v", err)
	}
}
