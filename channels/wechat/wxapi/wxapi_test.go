package wxapi_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"

	"github.com/kefuhq/kefu/channels/wechat/wxapi"
)

// These tests change silenceper/wechat's process globals (through Route);
// none runs in parallel.

const aesKey = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

func TestSignature(t *testing.T) {
	parts := []string{"token", "1700000000", "nonce", "ENCRYPTED"}
	sorted := append([]string(nil), parts...)
	sort.Strings(sorted)
	sum := sha1.Sum([]byte(strings.Join(sorted, "")))
	want := hex.EncodeToString(sum[:])
	if got := wxapi.Signature(parts...); got != want {
		t.Fatalf("Signature = %s, want %s", got, want)
	}
	if parts[0] != "token" {
		t.Fatal("Signature sorted its caller's slice")
	}
	tests := []struct {
		name string
		sig  string
		ok   bool
	}{
		{"good", want, true},
		{"upper-case hex", strings.ToUpper(want), true},
		{"wrong", strings.Repeat("0", 40), false},
		{"truncated", want[:39], false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := wxapi.VerifySignature(tt.sig, parts...); got != tt.ok {
				t.Fatalf("VerifySignature = %v, want %v", got, tt.ok)
			}
		})
	}
}

func TestCheckTimestamp(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tests := []struct {
		ts string
		ok bool
	}{
		{"1800000000", true},
		{"1799999800", true},  // 200 s old
		{"1800000250", true},  // a little ahead
		{"1799999600", false}, // 400 s old
		{"1800000400", false}, // from the future
		{"", false},
		{"17e8", false},
	}
	for _, tt := range tests {
		if err := wxapi.CheckTimestamp(tt.ts, now); (err == nil) != tt.ok {
			t.Errorf("CheckTimestamp(%q) = %v, want ok=%v", tt.ts, err, tt.ok)
		}
	}
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	plain := []byte("<xml><Content><![CDATA[你好 <&>]]></Content></xml>")
	enc, err := wxapi.Encrypt("wxappid", plain, aesKey)
	if err != nil {
		t.Fatal(err)
	}
	got, err := wxapi.Decrypt("wxappid", enc, aesKey)
	if err != nil || string(got) != string(plain) {
		t.Fatalf("Decrypt = %q, %v", got, err)
	}
	// The library's own decryption agrees.
	if _, raw, err := util.DecryptMsg("wxappid", enc, aesKey); err != nil || string(raw) != string(plain) {
		t.Fatalf("util.DecryptMsg = %q, %v", raw, err)
	}
	if _, err := wxapi.Decrypt("wxother", enc, aesKey); err == nil {
		t.Fatal("decrypted a message sealed for another receiver")
	}
	if _, err := wxapi.Decrypt("wxappid", enc, "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210abcdefg"); err == nil {
		t.Fatal("decrypted with another key")
	}
	b := []byte(enc)
	b[10] ^= 1
	if got, err := wxapi.Decrypt("wxappid", string(b), aesKey); err == nil && string(got) == string(plain) {
		t.Fatal("a tampered message decrypted to the original")
	}
	if enc2, _ := wxapi.Encrypt("wxappid", plain, aesKey); enc2 == enc {
		t.Fatal("two encryptions are equal: the random prefix is not random")
	}
}

func TestCheckAESKey(t *testing.T) {
	if err := wxapi.CheckAESKey(aesKey); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"", "short", aesKey + "A", strings.Repeat("!", 43)} {
		if wxapi.CheckAESKey(k) == nil {
			t.Errorf("CheckAESKey(%q) accepted", k)
		}
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code int64
		ok   bool
	}{
		{"APIError", &wxapi.APIError{Code: 45015}, 45015, true},
		{"wrapped APIError", fmt.Errorf("send: %w", &wxapi.APIError{Code: 40001}), 40001, true},
		{"CommonError", util.NewCommonError("x", 42001, "expired"), 42001, true},
		{"library text", errors.New("customer msg send error : errcode=45047 , errmsg=out of response count limit"), 45047, true},
		{"negative", errors.New("get access_token error : errcode=-1 , errormsg=system error"), -1, true},
		{"none", errors.New("connection refused"), 0, false},
		{"nil", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, ok := wxapi.Code(tt.err)
			if code != tt.code || ok != tt.ok {
				t.Fatalf("Code = %d, %v; want %d, %v", code, ok, tt.code, tt.ok)
			}
		})
	}
	if !wxapi.TokenRejected(&wxapi.APIError{Code: 40014}) || wxapi.TokenRejected(&wxapi.APIError{Code: 45015}) {
		t.Fatal("TokenRejected")
	}
}

func TestRouteRewritesEveryRequest(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		_, _ = io.WriteString(w, `{"errcode":0}`)
	}))
	defer srv.Close()
	release, err := wxapi.Route(wxapi.OfficialAccountHost, srv.URL+"/wx/")
	if err != nil {
		t.Fatal(err)
	}
	// kefu's own requests…
	if err := wxapi.GetJSON(context.Background(), "t", "https://api.weixin.qq.com/cgi-bin/a?access_token=T", nil); err != nil {
		t.Fatal(err)
	}
	// …and the library's, through its globals.
	if _, err := util.HTTPGet("https://api.weixin.qq.com/cgi-bin/b?x=1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := util.PostJSONWithRespContentType("https://api.weixin.qq.com/cgi-bin/c", map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	want := []string{"GET /wx/cgi-bin/a?access_token=T", "GET /wx/cgi-bin/b?x=1", "POST /wx/cgi-bin/c"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("server saw %q, want %q", got, want)
	}
	if !wxapi.Installed() {
		t.Fatal("the library does not use wxapi's client")
	}

	// A second user of the same base shares the route; another base is refused.
	release2, err := wxapi.Route(wxapi.OfficialAccountHost, srv.URL+"/wx")
	if err != nil {
		t.Fatalf("same base: %v", err)
	}
	if _, err := wxapi.Route(wxapi.OfficialAccountHost, "https://proxy.example.com"); !errors.Is(err, wxapi.ErrRouteConflict) {
		t.Fatalf("other base: %v, want ErrRouteConflict", err)
	}
	// The Work WeChat host is routed on its own.
	releaseWork, err := wxapi.Route(wxapi.WorkHost, "https://proxy.example.com")
	if err != nil {
		t.Fatalf("work host: %v", err)
	}
	releaseWork()
	release()
	release()  // idempotent
	release2() // the last user: the route goes
	r, err := wxapi.Route(wxapi.OfficialAccountHost, "https://proxy.example.com")
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	r()
}

func TestErrorsNameNoToken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusBadGateway)
	}))
	defer srv.Close()
	release, err := wxapi.Route(wxapi.OfficialAccountHost, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	err = wxapi.PostJSON(context.Background(), "message/custom/send", "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=SECRET", map[string]string{}, nil)
	var he *wxapi.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusBadGateway || !he.Transient() || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("err = %v", err)
	}
	srv.Close()
	err = wxapi.PostJSON(context.Background(), "x", "https://api.weixin.qq.com/cgi-bin/x?access_token=SECRET", map[string]string{}, nil)
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("network error names the token: %v", err)
	}
}

func TestTokensDoRetriesOnce(t *testing.T) {
	c := wxapi.NewCache()
	n := 0
	get := func(context.Context) (string, error) {
		if v, ok := c.Get("k").(string); ok {
			return v, nil
		}
		n++
		tok := fmt.Sprintf("t%d", n)
		_ = c.Set("k", tok, time.Hour)
		return tok, nil
	}
	tk := wxapi.NewTokens(c, "token", get)
	var seen []string
	err := tk.Do(context.Background(), func(tok string) error {
		seen = append(seen, tok)
		if tok == "t1" {
			return &wxapi.APIError{Code: wxapi.CodeInvalidToken}
		}
		return nil
	})
	if err != nil || strings.Join(seen, ",") != "t1,t2" {
		t.Fatalf("Do = %v, tokens %v", err, seen)
	}
	seen = nil
	err = tk.Do(context.Background(), func(tok string) error {
		seen = append(seen, tok)
		return &wxapi.APIError{Code: wxapi.CodeTokenExpired}
	})
	if !wxapi.TokenRejected(err) || len(seen) != 2 {
		t.Fatalf("Do = %v after %v, want one retry only", err, seen)
	}
	seen = nil
	_ = tk.Do(context.Background(), func(tok string) error {
		seen = append(seen, tok)
		return &wxapi.APIError{Code: wxapi.CodeWindowClosed}
	})
	if len(seen) != 1 {
		t.Fatalf("other errcodes were retried: %v", seen)
	}
}

func FuzzDecrypt(f *testing.F) {
	enc, _ := wxapi.Encrypt("wxappid", []byte("<xml/>"), aesKey)
	f.Add(enc)
	f.Add("")
	f.Add("AAAA")
	f.Add(strings.Repeat("A", 44))
	f.Fuzz(func(t *testing.T, s string) {
		plain, err := wxapi.Decrypt("wxappid", s, aesKey)
		if err == nil && plain == nil {
			t.Fatal("nil plaintext without error")
		}
	})
}
