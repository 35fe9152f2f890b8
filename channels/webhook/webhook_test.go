package webhook

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/channels"
	"github.com/kefuhq/kefu/core"
)

func TestSignVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"1","from":"a","text":"hi"}`)
	h := http.Header{}
	Sign("k", h, body, now)
	tests := []struct {
		name   string
		secret string
		body   []byte
		at     time.Time
		ok     bool
	}{
		{"good", "k", body, now, true},
		{"within skew", "k", body, now.Add(4 * time.Minute), true},
		{"stale", "k", body, now.Add(6 * time.Minute), false},
		{"from the future", "k", body, now.Add(-6 * time.Minute), false},
		{"wrong secret", "other", body, now, false},
		{"tampered body", "k", []byte(`{"id":"1","from":"a","text":"ho"}`), now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.secret, h, tt.body, tt.at)
			if (err == nil) != tt.ok {
				t.Fatalf("Verify: %v, want ok=%v", err, tt.ok)
			}
		})
	}
	bad := http.Header{}
	bad.Set(HeaderTimestamp, h.Get(HeaderTimestamp))
	bad.Set(HeaderSignature, "sha256=zz")
	if Verify("k", bad, body, now) == nil {
		t.Fatal("malformed signature accepted")
	}
}

func TestParseInbound(t *testing.T) {
	tests := []struct {
		name, body string
		ok         bool
	}{
		{"message", `{"id":"1","from":"a","text":"hi"}`, true},
		{"status", `{"type":"status","message_id":3,"status":"read"}`, true},
		{"missing id", `{"from":"a","text":"hi"}`, false},
		{"blank text", `{"id":"1","from":"a","text":" "}`, false},
		{"bad status", `{"type":"status","message_id":3,"status":"sent"}`, false},
		{"bad type", `{"type":"poke"}`, false},
		{"invalid utf8", "{\"id\":\"1\",\"from\":\"a\",\"text\":\"\xff\"}", false}, // refused, not stored as U+FFFD
		{"not json", `hello`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseInbound([]byte(tt.body))
			if (err == nil) != tt.ok {
				t.Fatalf("ParseInbound: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	if d := retryAfter("7", now); d != 7*time.Second {
		t.Fatalf("seconds: %v", d)
	}
	if d := retryAfter(now.Add(30*time.Second).UTC().Format(http.TimeFormat), now); d != 30*time.Second {
		t.Fatalf("date: %v", d)
	}
	if d := retryAfter("", now); d != time.Second {
		t.Fatalf("default: %v", d)
	}
}

func FuzzParseInbound(f *testing.F) {
	f.Add([]byte(`{"id":"1","from":"a","text":"hi"}`))
	f.Add([]byte(`{"type":"status","message_id":3,"status":"read"}`))
	f.Add([]byte(`{"id":`))
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := ParseInbound(body)
		if err == nil && in.Type == "message" && (in.ID == "" || in.From == "" || in.Text == "") {
			t.Fatalf("accepted an incomplete message: %+v", in)
		}
	})
}

// TestSendRedirects: a deliver_url answering 302 fails the reply with a
// reason that says so (followed, it would have become a GET without the
// reply, and its 2xx would have marked the reply sent); a 307 on the same
// host keeps the POST and its body, and is followed.
func TestSendRedirects(t *testing.T) {
	var reached atomic.Int64
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/302":
			http.Redirect(w, r, "/final", http.StatusFound)
		case "/307":
			http.Redirect(w, r, "/final", http.StatusTemporaryRedirect)
		default:
			if r.Method == http.MethodPost {
				got, _ = io.ReadAll(r.Body)
			}
			reached.Add(1)
		}
	}))
	defer srv.Close()
	send := func(path string) error {
		ch, err := New("crm", Config{Secret: "s", DeliverURL: srv.URL + path, Timeout: 5 * time.Second}, channels.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		m := &core.Message{ID: 1, ConversationID: 1, Seq: 2, Kind: core.KindText, Text: "your order ships today"}
		_, err = ch.Send(context.Background(), bridge.Outgoing{Message: m, Conversation: &core.Conversation{ID: 1, ExternalID: "cust-1"}})
		return err
	}
	var perm *bridge.PermanentError
	if err := send("/302"); !errors.As(err, &perm) || !strings.Contains(perm.Reason, "redirects") || !strings.Contains(perm.Reason, "/final") {
		t.Errorf("302: Send = %v, want a permanent failure saying where it redirects", err)
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("a 302 was followed: the target got %d requests", n)
	}
	if err := send("/307"); err != nil || reached.Load() != 1 || !strings.Contains(string(got), "your order ships today") {
		t.Errorf("307: Send = %v, target reached %d times with %q, want the POST delivered once", err, reached.Load(), got)
	}
}

// TestSendIgnoresUnstorableID: an id in deliver_url's answer that no store
// keeps (a NUL in it) is dropped; the reply was delivered all the same.
func TestSendIgnoresUnstorableID(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":"a\u0000b"}`)
	}))
	defer srv.Close()
	ch, err := New("crm", Config{Secret: "s", DeliverURL: srv.URL, Timeout: 5 * time.Second}, channels.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	m := &core.Message{ID: 1, ConversationID: 1, Seq: 2, Kind: core.KindText, Text: "hi"}
	res, err := ch.Send(context.Background(), bridge.Outgoing{Message: m, Conversation: &core.Conversation{ID: 1, ExternalID: "cust-1"}})
	if err != nil || res.ExternalID != "" {
		t.Fatalf("Send = %+v, %v; want delivered without the id", res, err)
	}
}

// A delivery request longer than the outbox's budget for one send would be
// cut and retried: the duplicates a slow receiver then gets are refused
// up front.
func TestTimeoutFitsTheSendBudget(t *testing.T) {
	for _, tc := range []struct {
		timeout time.Duration
		ok      bool
	}{{10 * time.Second, true}, {bridge.DefaultSendTimeout, true}, {bridge.DefaultSendTimeout + time.Second, false}, {0, false}} {
		c := Config{Secret: "s", DeliverURL: "https://crm.example.com/hook", Timeout: tc.timeout, MaxBodyBytes: 1024}
		err := c.Validate()
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "timeout")) {
			t.Errorf("timeout %v: %v, want ok %v", tc.timeout, err, tc.ok)
		}
	}
}
