package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
)

// Fuzz tests of the REST request decoders: whatever the bytes, a decoder
// either returns a 400 RequestError or a value its endpoint may use, and a
// value it accepts encodes back to a body it accepts again, unchanged.

// apiFuzzDecoder checks one request type.
func apiFuzzDecoder[T any, P interface {
	*T
	apiRequest
}](t *testing.T, data []byte, check func(T) string) {
	v, err := apiParse[T, P](data)
	if err != nil {
		var re *httpx.RequestError
		if !errors.As(err, &re) || re.Status != http.StatusBadRequest || re.Code != httpx.CodeBadRequest {
			t.Fatalf("error %v (%T) is not a 400 RequestError", err, err)
		}
		return
	}
	if problem := check(v); problem != "" {
		t.Fatalf("accepted %q: %s (%+v)", data, problem, v)
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := apiParse[T, P](again)
	if err != nil {
		t.Fatalf("accepted %q, but not its re-encoding %q: %v", data, again, err)
	}
	if !reflect.DeepEqual(v, v2) {
		t.Fatalf("round trip changed %+v into %+v", v, v2)
	}
}

func FuzzDecodeLogin(f *testing.F) {
	for _, s := range []string{
		`{"email":"alice@example.com","password":"alice-password"}`,
		`{"email":"  alice@example.com ","password":"x"}`,
		`{"email":"","password":""}`,
		`{"email":"a@b","password":"p","extra":1}`,
		`{"email":"a@b","password":"p"} {}`,
		`{"email":1}`, `null`, `[]`, `"x"`, `{`, ``,
		`{"email":"\u0000@x","password":"\ud800"}`,
		`{"EMAIL":"a@b","Password":"p"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		apiFuzzDecoder(t, data, func(q apiLoginRequest) string {
			switch {
			case q.Email == "" || q.Password == "":
				return "empty email or password"
			case q.Email != strings.TrimSpace(q.Email):
				return "email not trimmed"
			case len(q.Email) > 254 || len(q.Password) > apiMaxPassword:
				return "too long"
			}
			return ""
		})
	})
}

func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"client_id":"c-1","text":"Hi! How can I help?"}`,
		`{"client_id":"550e8400-e29b-41d4-a716-446655440000","text":"你好"}`,
		`{"client_id":"a:b","text":"x"}`,
		`{"client_id":"","text":"x"}`,
		`{"client_id":"a","text":"   "}`,
		`{"client_id":"a","text":"x","kind":"image"}`,
		`{"client_id":"a","text":"\u0000"}`,
		`{"client_id":"a","text":"x"}{}`,
		`{"text":null,"client_id":null}`,
		`null`, `{}`, `[`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		apiFuzzDecoder(t, data, func(q apiMessageRequest) string {
			if q.ClientID == "" || len(q.ClientID) > apiMaxClientID {
				return "client_id length"
			}
			if strings.ContainsAny(q.ClientID, ": \t\n/") {
				return "client_id with a separator"
			}
			if strings.TrimSpace(q.Text) == "" {
				return "blank text"
			}
			// What the handler builds from it passes core's content check.
			if core.ClientKey("a1", q.ClientID) == "" {
				return "no dedup key"
			}
			return ""
		})
	})
}

func FuzzDecodeAgentPatch(f *testing.F) {
	for _, s := range []string{
		`{"name":"Alice"}`, `{"role":"admin","active":false}`, `{"active":true}`, `{}`,
		`{"name":null}`, `{"role":1}`, `{"password":"x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		apiFuzzDecoder(t, data, func(q apiAgentPatch) string {
			if q.Name == nil && q.Role == nil && q.Active == nil {
				return "nothing to change"
			}
			return ""
		})
	})
}

func FuzzConversationQuery(f *testing.F) {
	for _, s := range []string{
		"", "status=open,pending&assignee=me&limit=10", "assignee=none&before=42", "assignee=7&channel=web&contact=3",
		"status=closed", "limit=0", "limit=501", "before=0", "sort=asc", "status=open&status=", "%zz",
	} {
		f.Add(s)
	}
	me := core.Agent{ID: 7}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, err := apiConversationFilter(q, me)
		if err != nil {
			var re *httpx.RequestError
			if !errors.As(err, &re) || re.Status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400", err)
			}
			return
		}
		if flt.Limit < 1 || flt.Limit > apiMaxConversations || flt.BeforeID < 0 || flt.AssigneeID < 0 || flt.ContactID < 0 {
			t.Fatalf("accepted %q as %+v", raw, flt)
		}
		for i, st := range flt.Statuses {
			if !st.Valid() || slices.Contains(flt.Statuses[:i], st) {
				t.Fatalf("accepted statuses %q", flt.Statuses)
			}
		}
	})
}
