package web

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kefuhq/kefu/bridge"
	"github.com/kefuhq/kefu/core"
)

func TestDecodeFrame(t *testing.T) {
	tests := []struct {
		name, in string
		code     string // "" for success
	}{
		{"hello", `{"type":"hello","token":"t","conversation_id":1,"last_seq":2}`, ""},
		{"agent hello", `{"type":"hello","token":"t","cursor":0}`, ""},
		{"send", `{"type":"send","id":"c-1","text":"hi"}`, ""},
		{"unknown fields are ignored", `{"type":"ping","future":{"x":1}}`, ""},
		{"not an object", `[{"type":"ping"}]`, codeBadFrame},
		{"empty", ``, codeBadFrame},
		{"truncated", `{"type":"send"`, codeBadFrame},
		{"trailing data", `{"type":"ping"}{}`, codeBadFrame},
		{"wrong field type", `{"type":"send","id":1,"text":"x"}`, codeBadFrame},
		{"no type", `{"id":"x"}`, codeBadFrame},
		{"unknown type", `{"type":"dance"}`, codeUnknownType},
		{"send without id", `{"type":"send","text":"x"}`, codeBadFrame},
		{"send with a colon in the id", `{"type":"send","id":"a:b","text":"x"}`, codeBadFrame},
		{"blank text", `{"type":"send","id":"x","text":"  \n"}`, codeBadRequest},
		{"text too long", `{"type":"send","id":"x","text":"` + strings.Repeat("a", maxTextBytes+1) + `"}`, codeTooLarge},
		{"receipt without seq", `{"type":"receipt","conversation_id":1,"status":"read"}`, codeBadFrame},
		{"receipt status", `{"type":"receipt","conversation_id":1,"seq":2,"status":"sent"}`, codeBadFrame},
		{"negative cursor", `{"type":"hello","cursor":-1}`, codeBadFrame},
		{"invalid UTF-8 in text", "{\"type\":\"send\",\"id\":\"x\",\"text\":\"ab\xff\xfecd\"}", codeBadRequest},
		{"invalid UTF-8 in an unknown field", "{\"type\":\"ping\",\"x\":\"\xc3\"}", codeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeFrame([]byte(tt.in))
			switch {
			case tt.code == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.code != "" && (err == nil || err.Code != tt.code):
				t.Fatalf("got %v, want code %s", err, tt.code)
			}
		})
	}
}

// A send that fails to decode is answered with its id, when it can be
// read, so that the client knows which send failed.
func TestDecodeFrameErrorKeepsTheSendID(t *testing.T) {
	for in, want := range map[string]string{
		`{"type":"send","id":"c-1","text":"hi","note":"yes"}`:         "c-1",
		`{"type":"send","id":"c-2","conversation_id":"7","text":"x"}`: "c-2",
		"{\"type\":\"send\",\"id\":\"c-3\",\"text\":\"\xff\"}":        "c-3",
		`{"type":"send","id":"c-4","text":"hi"`:                       "", // broken JSON: nothing can be read
		`{"type":"receipt","id":"c-5","seq":"x"}`:                     "", // not a send
	} {
		_, err := decodeFrame([]byte(in))
		if err == nil {
			t.Fatalf("%s: decoded", in)
		}
		if err.ID != want {
			t.Errorf("%s: error id %q, want %q", in, err.ID, want)
		}
	}
}

func TestIsFrameType(t *testing.T) {
	for in, want := range map[string]bool{
		`{"type":"pong"}`:              true,
		" {\n \"type\" :\t\"pong\" } ": true,
		`{"type":"ping"}`:              false,
		`{"type":"pong","x":1}`:        false,
		`{"type":"pong"}}`:             false,
		`{"type":"pon"}`:               false,
		`{"type":"pong"`:               false,
		``:                             false,
	} {
		if got := isFrameType([]byte(in), framePong); got != want {
			t.Errorf("%q: %v", in, got)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte(`{"type":"send","id":"x","text":"hello"}`))
	f.Add([]byte(`{"type":"hello","token":"kfv_a.b","conversation_id":1,"last_seq":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, perr := decodeFrame(data)
		if isFrameType(data, framePong) && (perr != nil || fr.Type != framePong) {
			t.Fatalf("the pong fast path took %q, the decoder says %+v %v", data, fr, perr)
		}
		if perr != nil {
			// Whatever the input, the answer is a well-formed error frame.
			var out map[string]any
			if err := json.Unmarshal(errorFrame(perr).data, &out); err != nil || perr.Code == "" {
				t.Fatalf("error frame for %q: %v", data, err)
			}
			return
		}
		if err := fr.validate(); err != nil {
			t.Fatalf("decoded frame does not validate: %v", err)
		}
		switch fr.Type {
		case frameHello, frameSend, frameReceipt, frameTyping, framePing, framePong:
		default:
			t.Fatalf("decoded an unknown type %q", fr.Type)
		}
		if fr.Type == frameSend && (checkClientID(fr.ID) != nil || !utf8.ValidString(fr.Text) || len(fr.Text) > maxTextBytes) {
			t.Fatalf("accepted a bad send: %+v", fr)
		}
		// A decoded frame encodes and decodes to itself.
		b, err := json.Marshal(fr)
		if err != nil {
			t.Fatal(err)
		}
		again, perr := decodeFrame(b)
		if perr != nil || !reflect.DeepEqual(again, fr) {
			t.Fatalf("round trip: %+v → %s → %+v (%v)", fr, b, again, perr)
		}
	})
}

func FuzzDecodeSessionRequest(f *testing.F) {
	f.Add([]byte(`{"name":"Zhang San"}`))
	f.Add([]byte(`{"identity":{"user_id":"u1","timestamp":1,"signature":"` + strings.Repeat("0", 64) + `"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := decodeSessionRequest(data)
		if err != nil {
			return
		}
		if utf8.RuneCountInString(req.Name) > maxName || !utf8.ValidString(req.Name) {
			t.Fatalf("accepted name %q", req.Name)
		}
		if id := req.Identity; id != nil && (checkUserID(id.UserID) != nil || len(id.Signature) != 64 || id.Timestamp <= 0) {
			t.Fatalf("accepted identity %+v", id)
		}
	})
}

func TestVisitorTokens(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rt := &realtime{c: &Channel{name: "web", now: func() time.Time { return now }}, tokenKey: visitorTokenKey(make([]byte, 32))}
	other := &realtime{c: &Channel{name: "shop", now: rt.c.now}, tokenKey: rt.tokenKey}
	v := visitor{identity: "a:" + strings.Repeat("ab", 16), name: "张三"}
	tok := rt.signVisitor(v, now.Add(time.Hour))
	otherTok := rt.signVisitor(visitor{identity: "u:someone"}, now.Add(time.Hour))
	swapped := tok[:strings.IndexByte(tok, '.')] + otherTok[strings.IndexByte(otherTok, '.'):]
	got, err := rt.parseVisitor(tok)
	if err != nil || got != v {
		t.Fatalf("parse = %+v, %v", got, err)
	}
	for name, bad := range map[string]string{
		"tampered":          tok[:len(tok)-3] + "AAA",
		"swapped signature": swapped,
		"no prefix":         strings.TrimPrefix(tok, visitorTokenPrefix),
		"agent token":       "kfa_" + strings.Repeat("A", 43),
		"empty":             "",
	} {
		if _, err := rt.parseVisitor(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := other.parseVisitor(tok); err == nil {
		t.Error("a token of another instance was accepted")
	}
	now = now.Add(2 * time.Hour)
	if _, err := rt.parseVisitor(tok); err == nil {
		t.Error("an expired token was accepted")
	}
}

func TestVerifyIdentity(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rt := &realtime{c: &Channel{name: "web", now: func() time.Time { return now },
		cfg: Config{IdentitySecret: "s3cret", IdentityMaxAge: time.Hour}}}
	sign := func(user string, at time.Time) *identityProof {
		return &identityProof{UserID: user, Timestamp: at.Unix(), Signature: SignIdentity("s3cret", user, at.Unix())}
	}
	if id, err := rt.verifyIdentity(sign("42", now.Add(-time.Minute))); err != nil || id != "u:42" {
		t.Fatalf("good signature: %q %v", id, err)
	}
	upper := sign("42", now)
	upper.Signature = strings.ToUpper(upper.Signature)
	if _, err := rt.verifyIdentity(upper); err != nil {
		t.Errorf("upper-case hex refused: %v", err)
	}
	for name, p := range map[string]*identityProof{
		"stale":        sign("42", now.Add(-2*time.Hour)),
		"future":       sign("42", now.Add(time.Hour)),
		"other user":   {UserID: "43", Timestamp: now.Unix(), Signature: sign("42", now).Signature},
		"other time":   {UserID: "42", Timestamp: now.Unix() - 1, Signature: sign("42", now).Signature},
		"wrong secret": {UserID: "42", Timestamp: now.Unix(), Signature: SignIdentity("nope", "42", now.Unix())},
	} {
		if _, err := rt.verifyIdentity(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// benchMessage is a typical message with its conversation.
func benchMessage(id int64) (*core.Message, *core.Conversation) {
	c := &core.Conversation{ID: 42, ContactID: 7, Channel: "web", ExternalID: "a:0123456789abcdef0123456789abcdef",
		Status: core.StatusOpen, AssigneeID: 3, LastSeq: id, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	m := &core.Message{ID: id, ConversationID: 42, Seq: id, SenderKind: core.SenderContact, SenderID: 7,
		Visibility: core.Public, Kind: core.KindText, Text: "Hello, my order #12345 has not arrived yet, can you check?",
		Status: core.MsgSent, CreatedAt: time.Now()}
	return m, c
}

func BenchmarkEncodeFrame(b *testing.B) {
	m, c := benchMessage(1)
	b.Run("agent", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = agentMessageFrame(m, c)
		}
	})
	b.Run("visitor", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = visitorMessageFrame(m, nil)
		}
	})
	b.Run("decode send", func(b *testing.B) {
		in := []byte(`{"type":"send","id":"6f1c2a9e-3b7d-4e0f-9a21-c5d8e7f6a1b2","text":"Hello, my order #12345 has not arrived yet"}`)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeFrame(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// countOutlet counts frames, as cheaply as an outlet can.
type countOutlet struct{ n int }

func (o *countOutlet) push(*frame) { o.n++ }

// BenchmarkHubFanout is the hot path from a released update to the
// outlets: a conversation's visitor (two tabs) and every agent, with many
// other visitors connected.
func BenchmarkHubFanout(b *testing.B) {
	for _, agents := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("agents=%d", agents), func(b *testing.B) {
			h := newHub("web", nil)
			for i := range 10000 {
				id := fmt.Sprintf("a:%032d", i)
				h.register(&sub{aud: audVisitor, identity: id, out: &countOutlet{}})
				h.joinIdentity(id, int64(1000+i), 0)
			}
			_, c := benchMessage(1)
			tab1, tab2 := &countOutlet{}, &countOutlet{}
			h.register(&sub{aud: audVisitor, identity: c.ExternalID, out: tab1})
			h.register(&sub{aud: audVisitor, identity: c.ExternalID, out: tab2})
			h.joinIdentity(c.ExternalID, c.ID, 0)
			for i := range agents {
				h.register(&sub{aud: audAgent, agentID: int64(i + 1), out: &countOutlet{}})
			}
			s := bridge.NewSequencer(0, time.Second, nil, nil)
			now := time.Now()
			b.ReportAllocs()
			id := int64(0)
			for b.Loop() {
				id++
				m, c := benchMessage(id)
				s.Add(core.Update{Type: core.UpdateMessage, Message: m, Conversation: c}, now, h.dispatch)
			}
			if int64(tab1.n) != id || int64(tab2.n) != id {
				b.Fatalf("tabs got %d and %d of %d", tab1.n, tab2.n, id)
			}
		})
	}
}

// A long poll's waiter holds the frames of the conversation it resumes
// until the replay has read where the conversation is (settle): one that
// commits meanwhile is kept even when the client's cursor was past the
// conversation's end, and what the client has is dropped.
func TestWaiterSettle(t *testing.T) {
	msg := func(conv, seq int64) *frame { return &frame{msg: true, conv: conv, seq: seq, data: []byte("{}")} }
	w := newWaiter(cursorFilter{}, 10)
	w.hold = 5
	w.push(msg(5, 29)) // the client has it
	w.push(msg(5, 31)) // committed after the replay's read, before settle
	w.push(msg(6, 1))  // another conversation passes as before
	w.settle(5, 30)    // the client said 50; the conversation ends at 30
	w.push(msg(5, 31)) // the same again (the seam): dropped
	w.push(msg(5, 32))
	var got [][2]int64
	for _, f := range w.take() {
		got = append(got, [2]int64{f.conv, f.seq})
	}
	if want := [][2]int64{{5, 31}, {6, 1}, {5, 32}}; !slices.Equal(got, want) {
		t.Errorf("frames %v, want %v", got, want)
	}
	// Settled with nothing left: no wake-up for an empty answer.
	w = newWaiter(cursorFilter{}, 10)
	w.hold = 5
	w.push(msg(5, 3))
	w.settle(5, 3)
	select {
	case <-w.wake:
		t.Error("a wake-up left for frames settle dropped")
	default:
	}
}
