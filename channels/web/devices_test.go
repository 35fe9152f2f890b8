package web_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/web"
	"github.com/kefuhq/kefu/core"
)

func TestAgentDevices(t *testing.T) {
	h := startAPINode(t)
	alice := h.login(apiAliceMail, apiAlicePass)
	root := h.login(apiRootEmail, apiRootPass)
	tok := strings.Repeat("AB", 32) // upper case is accepted and stored lower

	var d struct {
		Token, Topic, Environment string
		CreatedAt                 *string `json:"created_at"`
	}
	h.do("POST", "/api/v1/devices", alice, map[string]any{"token": tok, "topic": "com.example.console", "environment": "sandbox"}).
		want(t, "register", http.StatusOK).decode(t, &d)
	if d.Token != strings.ToLower(tok) || d.Topic != "com.example.console" || d.Environment != "sandbox" || d.CreatedAt == nil {
		t.Errorf("registered %+v", d)
	}
	// Any body but a message may be 16 KiB (docs/api.md): 3 KB is fine.
	padded := `{"token": "` + tok + `",` + strings.Repeat(" ", 3000) + `"topic": "com.example.console", "environment": "sandbox"}`
	h.do("POST", "/api/v1/devices", alice, padded).want(t, "register with a 3 KB body", http.StatusOK)
	ds, err := h.store.Devices(t.Context(), core.AgentDevices(h.alice.ID))
	if err != nil || len(ds) != 1 {
		t.Fatalf("stored devices %v, %v", ds, err)
	}
	var list struct{ Devices []map[string]any }
	h.do("GET", "/api/v1/devices", alice, nil).want(t, "list", http.StatusOK).decode(t, &list)
	if len(list.Devices) != 1 {
		t.Errorf("listed %v", list.Devices)
	}
	h.do("GET", "/api/v1/devices", root, nil).want(t, "list another agent's", http.StatusOK).decode(t, &list)
	if len(list.Devices) != 0 {
		t.Errorf("root sees %v", list.Devices)
	}

	for _, tc := range []struct {
		name string
		body any
	}{
		{"short token", map[string]any{"token": "abcd"}},
		{"not hex", map[string]any{"token": strings.Repeat("zz", 32)}},
		{"bad topic", map[string]any{"token": strings.Repeat("cd", 32), "topic": "com example"}},
		{"bad environment", map[string]any{"token": strings.Repeat("cd", 32), "environment": "staging"}},
		{"unknown field", map[string]any{"token": strings.Repeat("cd", 32), "platform": "ios"}},
		{"malformed", `{"token":`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.do("POST", "/api/v1/devices", alice, tc.body).want(t, tc.name, http.StatusBadRequest)
		})
	}
	h.do("POST", "/api/v1/devices", "", map[string]any{"token": tok}).want(t, "without a token", http.StatusUnauthorized)
	if ds, _ := h.store.Devices(t.Context(), core.AgentDevices(h.alice.ID)); len(ds) != 1 {
		t.Errorf("refused registrations changed the devices: %v", ds)
	}

	// Another agent cannot remove Alice's device.
	h.do("DELETE", "/api/v1/devices/"+strings.ToLower(tok), root, nil).want(t, "remove another's", http.StatusNotFound)
	h.do("DELETE", "/api/v1/devices/xyz", alice, nil).want(t, "remove a malformed token", http.StatusBadRequest)
	h.do("DELETE", "/api/v1/devices/"+tok, alice, nil).want(t, "remove", http.StatusNoContent)
	h.do("DELETE", "/api/v1/devices/"+tok, alice, nil).want(t, "remove twice", http.StatusNotFound)
}

func TestVisitorDevices(t *testing.T) {
	h := startAPINode(t)
	var sess struct {
		Token   string
		Visitor struct{ ID string }
	}
	h.do("POST", "/api/v1/visitor/session", "", map[string]any{}).want(t, "session", http.StatusOK).decode(t, &sess)
	var other struct{ Token string }
	h.do("POST", "/api/v1/visitor/session", "", map[string]any{}).want(t, "session", http.StatusOK).decode(t, &other)
	tok := strings.Repeat("0f", 32)

	// Before the visitor's first message: refused, nothing stored.
	h.do("POST", "/api/v1/visitor/devices", sess.Token, map[string]any{"token": tok}).want(t, "register before writing", http.StatusConflict)
	if ds, _ := h.store.Devices(t.Context(), core.IdentityDevices(apiChannel, sess.Visitor.ID)); len(ds) != 0 {
		t.Fatalf("a refused registration stored %v", ds)
	}
	if _, err := h.svc.Ingest(t.Context(), core.Inbound{Channel: apiChannel, ExternalID: sess.Visitor.ID,
		Message: core.Message{Kind: core.KindText, Text: "hello"}}); err != nil {
		t.Fatal(err)
	}
	h.do("POST", "/api/v1/visitor/devices", sess.Token, map[string]any{"token": tok}).want(t, "register", http.StatusOK)
	ds, err := h.store.Devices(t.Context(), core.IdentityDevices(apiChannel, sess.Visitor.ID))
	if err != nil || len(ds) != 1 || ds[0].Token != tok || ds[0].Topic != "" || ds[0].Environment != "" {
		t.Fatalf("stored %+v, %v", ds, err)
	}
	h.do("POST", "/api/v1/visitor/devices", "", map[string]any{"token": tok}).want(t, "no visitor token", http.StatusUnauthorized)
	h.do("POST", "/api/v1/visitor/devices", "kfv_forged.sig", map[string]any{"token": tok}).want(t, "forged visitor token", http.StatusUnauthorized)
	h.do("POST", "/api/v1/visitor/devices", sess.Token, map[string]any{"token": "12"}).want(t, "bad token", http.StatusBadRequest)
	h.do("POST", "/api/v1/visitor/devices", sess.Token, map[string]any{"token": tok, "environment": "dev"}).want(t, "bad environment", http.StatusBadRequest)
	h.do("POST", "/api/v1/visitor/devices", sess.Token, map[string]any{"token": tok, "extra": 1}).want(t, "unknown field", http.StatusBadRequest)
	// This node has no pusher: no topic is the deployment's app.
	h.do("POST", "/api/v1/visitor/devices", sess.Token, map[string]any{"token": tok, "topic": "com.example.other"}).
		want(t, "a topic that is not the deployment's app", http.StatusBadRequest)
	if ds, _ := h.store.Devices(t.Context(), core.IdentityDevices(apiChannel, sess.Visitor.ID)); len(ds) != 1 || ds[0].Topic != "" {
		t.Fatalf("a refused topic changed the device: %+v", ds)
	}

	// An agent's token cannot be taken by a visitor, nor the reverse.
	alice := h.login(apiAliceMail, apiAlicePass)
	agentTok := strings.Repeat("a1", 32)
	h.do("POST", "/api/v1/devices", alice, map[string]any{"token": agentTok}).want(t, "agent registers", http.StatusOK)
	h.do("POST", "/api/v1/visitor/devices", sess.Token, map[string]any{"token": agentTok}).want(t, "visitor takes the agent's token", http.StatusConflict)
	if ds, _ := h.store.Devices(t.Context(), core.AgentDevices(h.alice.ID)); len(ds) != 1 || ds[0].Token != agentTok {
		t.Fatalf("alice's devices after a visitor's attempt: %+v", ds)
	}
	h.do("POST", "/api/v1/devices", alice, map[string]any{"token": tok}).want(t, "agent takes the visitor's token", http.StatusConflict)

	h.do("DELETE", "/api/v1/visitor/devices/"+tok, other.Token, nil).want(t, "another visitor removes it", http.StatusNotFound)
	if ds, _ := h.store.Devices(t.Context(), core.IdentityDevices(apiChannel, sess.Visitor.ID)); len(ds) != 1 {
		t.Fatalf("a refused removal removed the device")
	}
	h.do("DELETE", "/api/v1/visitor/devices/"+tok, sess.Token, nil).want(t, "remove", http.StatusNoContent)
	if ds, _ := h.store.Devices(t.Context(), core.IdentityDevices(apiChannel, sess.Visitor.ID)); len(ds) != 0 {
		t.Errorf("devices after removal: %v", ds)
	}

	// The visitor session runs out: its token no longer registers, but
	// still signs the device out, so that the app can stop the pushes of
	// conversations it can no longer open.
	h.do("POST", "/api/v1/visitor/devices", sess.Token, map[string]any{"token": tok}).want(t, "register again", http.StatusOK)
	expired := web.APITestChannel(h.svc).SignVisitorToken(sess.Visitor.ID, time.Now().Add(-time.Minute))
	h.do("POST", "/api/v1/visitor/devices", expired, map[string]any{"token": tok}).want(t, "register with an expired token", http.StatusUnauthorized)
	h.do("DELETE", "/api/v1/visitor/devices/"+tok, expired, nil).want(t, "sign out with an expired token", http.StatusNoContent)
	if ds, _ := h.store.Devices(t.Context(), core.IdentityDevices(apiChannel, sess.Visitor.ID)); len(ds) != 0 {
		t.Errorf("devices after the sign-out with an expired token: %v", ds)
	}
	forged := expired[:len(expired)-3] + "AAA"
	h.do("DELETE", "/api/v1/visitor/devices/"+tok, forged, nil).want(t, "sign out with a forged token", http.StatusUnauthorized)
	// A token gone for longer than visitor_token_ttl (the default, 30
	// days) does not.
	h.do("POST", "/api/v1/visitor/devices", sess.Token, map[string]any{"token": tok}).want(t, "register once more", http.StatusOK)
	longGone := web.APITestChannel(h.svc).SignVisitorToken(sess.Visitor.ID, time.Now().Add(-31*24*time.Hour))
	h.do("DELETE", "/api/v1/visitor/devices/"+tok, longGone, nil).want(t, "sign out with a token long expired", http.StatusUnauthorized)
	if ds, _ := h.store.Devices(t.Context(), core.IdentityDevices(apiChannel, sess.Visitor.ID)); len(ds) != 1 {
		t.Errorf("a token long expired removed the device: %v", ds)
	}
}
