package web_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/channels/web/webtest"
)

// TestOthersConversationLooksMissing: asking for another visitor's
// conversation is answered exactly as asking for one that does not exist,
// so that a visitor cannot find out which conversations exist.
func TestOthersConversationLooksMissing(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	ctx := context.Background()
	victim := h.session("")
	vp := &webtest.Poller{Client: h.cl, Token: victim.Token}
	conv := must(vp.SendText(ctx, "v-1", 0, "secret", false)).Message.ConversationID
	other := h.session("")
	get := func(path string) string {
		code, b := h.visitorGet(other.Token, path)
		return fmt.Sprintf("%d %s", code, strings.ReplaceAll(b, fmt.Sprint(conv+1000), fmt.Sprint(conv)))
	}
	for _, path := range []string{"/lp/visitor?conversation_id=%d", "/api/v1/visitor/messages?conversation_id=%d"} {
		theirs, missing := get(fmt.Sprintf(path, conv)), get(fmt.Sprintf(path, conv+1000))
		if theirs != missing || !strings.HasPrefix(theirs, "404 ") {
			t.Errorf("%s: another visitor's conversation: %s; a missing one: %s; want the same 404", path, theirs, missing)
		}
	}
}

// A visitor endpoint's number given twice is refused, not read as its
// first value (a visitor's own conversation, then another's).
func TestVisitorParameterGivenTwice(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	token, conv := h.visitorConversation()
	for _, path := range []string{
		fmt.Sprintf("/api/v1/visitor/messages?conversation_id=%d&conversation_id=%d", conv, conv+1),
		fmt.Sprintf("/api/v1/visitor/messages?conversation_id=%d&limit=5&limit=500", conv),
		fmt.Sprintf("/lp/visitor?conversation_id=%d&last_seq=1&last_seq=0", conv),
	} {
		if code, _ := h.visitorGet(token, path); code != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", path, code)
		}
	}
}

// visitorGet sends GET path with a visitor token, from the widget's page,
// and returns the answer's status and body.
func (h *rtNode) visitorGet(token, path string) (int, string) {
	h.t.Helper()
	code, _, body := h.visitorDo(http.MethodGet, token, path)
	return code, body
}

// visitorDo sends a request without a body from the widget's page, with
// token ("": none), and returns the answer's status, headers and body.
func (h *rtNode) visitorDo(method, token, path string) (int, http.Header, string) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Origin", rtOrigin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// visitorConversation starts a visitor session whose first message began
// a conversation, and returns its token and the conversation.
func (h *rtNode) visitorConversation() (string, int64) {
	h.t.Helper()
	s := h.session("")
	p := &webtest.Poller{Client: h.cl, Token: s.Token}
	return s.Token, must(p.SendText(context.Background(), "v-1", 0, "hello", false)).Message.ConversationID
}

// A query parameter an endpoint does not take is refused, so that a
// misspelt one ("cursr") is not silently ignored (a poll from now on,
// skipping what the cursor would have replayed).
func TestUnknownQueryParameterRefused(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	token, conv := h.visitorConversation()
	for _, path := range []string{
		fmt.Sprintf("/api/v1/visitor/messages?conversation=%d", conv),
		fmt.Sprintf("/lp/visitor?conversation_id=%d&last=1", conv),
	} {
		if code, body := h.visitorGet(token, path); code != http.StatusBadRequest || !strings.Contains(body, "unknown query parameter") {
			t.Errorf("%s: HTTP %d %s, want 400 naming the parameter", path, code, body)
		}
	}
	if code, _ := h.visitorGet(token, fmt.Sprintf("/api/v1/visitor/messages?conversation_id=%d&limit=5", conv)); code != http.StatusOK {
		t.Errorf("history with its own parameters: HTTP %d", code)
	}
	alice := h.token(h.agent("alice@example.com"))
	if code, body := h.visitorGet(alice, "/lp/agent?cursr=0"); code != http.StatusBadRequest || !strings.Contains(body, "cursr") {
		t.Errorf("/lp/agent?cursr=0: HTTP %d %s, want 400", code, body)
	}
	if code, _, _ := h.visitorDo(http.MethodPost, "", "/api/v1/visitor/session?foo=1"); code != http.StatusBadRequest {
		t.Errorf("session?foo=1: HTTP %d, want 400", code)
	}
}

// A method a visitor or long-poll endpoint does not take is 405 with
// Allow, in the JSON error shape, as on the agent API (not the API's 404
// "no such endpoint", nor the ServeMux's plain text).
func TestVisitorEndpointWrongMethod(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodGet, "/api/v1/visitor/session", "POST, OPTIONS"},
		{http.MethodPost, "/api/v1/visitor/messages", "GET, OPTIONS, HEAD"},
		{http.MethodPut, "/lp/visitor", "GET, POST, OPTIONS, HEAD"},
		{http.MethodGet, "/api/v1/visitor/devices/abc", "DELETE, OPTIONS"},
	} {
		code, hdr, body := h.visitorDo(c.method, "", c.path)
		if code != http.StatusMethodNotAllowed || hdr.Get("Allow") != c.allow || !strings.Contains(body, `"code":"method_not_allowed"`) {
			t.Errorf("%s %s: HTTP %d Allow %q %s; want 405, Allow %q, the JSON error", c.method, c.path, code, hdr.Get("Allow"), body, c.allow)
		}
	}
}

// Every field of a session request is optional: a request without a body
// starts an anonymous visitor's session, as {} does.
func TestSessionWithoutBody(t *testing.T) {
	defer guard(t)
	h := startRT(t, "")
	if code, _, body := h.visitorDo(http.MethodPost, "", "/api/v1/visitor/session"); code != http.StatusOK || !strings.Contains(body, `"token"`) {
		t.Fatalf("session without a body: HTTP %d %s", code, body)
	}
}
