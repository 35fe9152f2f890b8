package httpx

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		err  error
		code int
		name string
	}{
		{fmt.Errorf("x: %w", core.ErrNotFound), 404, CodeNotFound},
		{fmt.Errorf("x: %w", core.ErrConflict), 409, CodeConflict},
		{core.ErrCapacity, 409, CodeCapacity},
		{core.ErrWindowClosed, 409, CodeWindowClosed},
		{core.ErrInvalid, 400, CodeBadRequest},
		{core.ErrForbidden, 403, CodeForbidden},
		{core.ErrClosed, 503, CodeUnavailable},
		{BadRequest("no"), 400, CodeBadRequest},
		{errors.New("disk on fire"), 500, CodeInternal},
	}
	for _, tt := range tests {
		if code, name := Status(tt.err); code != tt.code || name != tt.name {
			t.Errorf("Status(%v) = %d %s, want %d %s", tt.err, code, name, tt.code, tt.name)
		}
	}
}

func TestFromErrorHidesInternals(t *testing.T) {
	w := httptest.NewRecorder()
	FromError(w, nil, errors.New("open /var/lib/kefu/secret: permission denied"))
	if w.Code != 500 || strings.Contains(w.Body.String(), "secret") || !strings.Contains(w.Body.String(), `"code":"internal"`) {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
}

func TestDecodeJSON(t *testing.T) {
	type req struct {
		Text string `json:"text"`
	}
	tests := []struct {
		name, body, ctype string
		status            int
	}{
		{"ok", `{"text":"hi"}`, "application/json", 0},
		{"ok without content type", `{"text":"hi"}`, "", 0},
		{"unknown field", `{"text":"hi","x":1}`, "application/json", 400},
		{"trailing data", `{"text":"hi"} {}`, "application/json", 400},
		{"syntax", `{"text":`, "application/json", 400},
		{"wrong type", `{"text":5}`, "application/json", 400},
		{"too large", `{"text":"` + strings.Repeat("x", 200) + `"}`, "application/json", 413},
		{"wrong content type", `{"text":"hi"}`, "text/plain", 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			var v req
			err := DecodeJSON(httptest.NewRecorder(), r, 100, &v)
			if tt.status == 0 {
				if err != nil || v.Text != "hi" {
					t.Fatalf("err %v, v %+v", err, v)
				}
				return
			}
			if status, _ := Status(err); status != tt.status {
				t.Fatalf("status %d (%v), want %d", status, err, tt.status)
			}
		})
	}
}

// Invalid UTF-8 is refused, not stored as U+FFFD.
func TestUnmarshalRefusesInvalidUTF8(t *testing.T) {
	var v struct{ Text string }
	err := Unmarshal([]byte("{\"Text\":\"ab\xff\xfecd\"}"), &v)
	if err == nil || !strings.Contains(err.Error(), "UTF-8") || v.Text != "" {
		t.Fatalf("Unmarshal = %v, text %q; want a 400 naming UTF-8, nothing decoded", err, v.Text)
	}
	if err := Unmarshal([]byte(`{"Text":"好的 ✓"}`), &v); err != nil || v.Text != "好的 ✓" {
		t.Fatalf("valid UTF-8: %v, %q", err, v.Text)
	}
}

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name, remote, xff string
		trusted           []netip.Prefix
		want              string
	}{
		{"no proxies: header ignored", "203.0.113.5:1234", "1.2.3.4", nil, "203.0.113.5"},
		{"untrusted peer: header ignored", "203.0.113.5:1234", "1.2.3.4", trusted, "203.0.113.5"},
		{"trusted proxy", "10.0.0.2:80", "198.51.100.7", trusted, "198.51.100.7"},
		{"spoofed left entries ignored", "10.0.0.2:80", "1.1.1.1, 198.51.100.7", trusted, "198.51.100.7"},
		{"chain of trusted proxies", "10.0.0.2:80", "198.51.100.7, 10.0.0.9", trusted, "198.51.100.7"},
		{"garbage in chain", "10.0.0.2:80", "nonsense", trusted, "10.0.0.2"},
		{"ipv6 peer", "[2001:db8::1]:443", "", nil, "2001:db8::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tt.remote
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
			if got := ClientIP(r, tt.trusted); got.String() != tt.want {
				t.Fatalf("ClientIP = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLimiter(2, time.Second, 2)
	l.now = func() time.Time { return now }
	for i := range 2 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("event %d refused within the burst", i)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("third event: ok %v wait %v", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key is limited by the first")
	}
	now = now.Add(wait)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refused after waiting the advertised time")
	}
	now = now.Add(time.Hour)
	l.Allow("c")
	if n := l.Len(); n != 1 {
		t.Fatalf("idle keys kept: %d", n)
	}
}

func TestTooMany(t *testing.T) {
	w := httptest.NewRecorder()
	TooMany(w, 1500*time.Millisecond)
	if w.Code != 429 || w.Header().Get("Retry-After") != "2" {
		t.Fatalf("got %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"text":"hi"}`))
	f.Add([]byte(`{"text":`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v struct {
			Text string `json:"text"`
			N    int    `json:"n"`
		}
		_ = Unmarshal(data, &v)
	})
}

func TestWindowLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewWindowLimiter(Window{N: 3, Span: time.Minute}, Window{N: 5, Span: time.Hour})
	l.now = func() time.Time { return now }
	allow := func(key string) (bool, time.Duration) {
		t.Helper()
		return l.Allow(key)
	}
	// The whole window at once: no bucket refilling on top of it.
	for i := range 3 {
		if ok, _ := allow("a"); !ok {
			t.Fatalf("event %d refused within the window", i)
		}
		now = now.Add(time.Second)
	}
	ok, wait := allow("a")
	if ok || wait != 57*time.Second { // the first event leaves the minute at 1060
		t.Fatalf("fourth event in the minute: ok %v wait %v, want false 57s", ok, wait)
	}
	if ok, _ := allow("b"); !ok {
		t.Fatal("another key is limited by the first")
	}
	// In any minute, never more than 3: just before the first event leaves,
	// still refused; at its end, one more.
	now = now.Add(wait - time.Millisecond)
	if ok, _ := allow("a"); ok {
		t.Fatal("allowed before the oldest event left the minute")
	}
	now = now.Add(time.Millisecond)
	if ok, _ := allow("a"); !ok {
		t.Fatal("refused after waiting the advertised time")
	}
	if ok, _ := allow("a"); ok {
		t.Fatal("a fifth event in the minute the fourth was allowed in")
	}
	// The hour: 5 events, then the wait is for the hour, not the minute.
	now = now.Add(2 * time.Minute)
	if ok, _ := allow("a"); !ok {
		t.Fatal("fifth event of the hour refused")
	}
	now = now.Add(2 * time.Minute)
	ok, wait = allow("a")
	if ok || wait <= time.Minute || wait > time.Hour {
		t.Fatalf("sixth event in the hour: ok %v wait %v", ok, wait)
	}
	now = now.Add(wait)
	if ok, _ := allow("a"); !ok {
		t.Fatal("refused after the hour's wait")
	}
	// Keys idle for the longest span are forgotten.
	now = now.Add(2 * time.Hour)
	allow("c")
	if n := l.Len(); n != 1 {
		t.Fatalf("idle keys kept: %d", n)
	}
}

func TestWindowLimiterRejectsEmptyWindow(t *testing.T) {
	for _, ws := range [][]Window{{{N: 0, Span: time.Minute}}, {{N: 1, Span: 0}}, nil} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewWindowLimiter(%+v) did not panic", ws)
				}
			}()
			NewWindowLimiter(ws...)
		}()
	}
}

// Field names are exact: encoding/json would take "Name" for "name".
func TestUnmarshalRefusesFieldsInAnotherCase(t *testing.T) {
	type media struct {
		Key string `json:"key"`
	}
	type body struct {
		Name  string  `json:"name"`
		Seq   int64   `json:"seq"`
		Media *media  `json:"media"`
		Items []media `json:"items"`
	}
	for in, bad := range map[string]string{
		`{"Name":"Mallory"}`:                       "Name",
		`{"name":"a","SEQ":1}`:                     "SEQ",
		`{"media":{"KEY":"k"}}`:                    "media.KEY",
		`{"items":[{"key":"a"},{"Key":"b"}]}`:      "items.Key",
		`{"name":"a","seq":1,"media":{"key":"k"}}`: "",
		`{"media":null,"items":null}`:              "",
	} {
		var v body
		err := Unmarshal([]byte(in), &v)
		switch {
		case bad == "" && err != nil:
			t.Errorf("%s: %v", in, err)
		case bad != "" && (err == nil || !strings.Contains(err.Error(), `"`+bad+`"`)):
			t.Errorf("%s: %v, want the field %q named", in, err, bad)
		}
	}
}
