package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kefuhq/kefu/channels/web"
	"github.com/kefuhq/kefu/channels/web/webtest"
	"github.com/kefuhq/kefu/core"
)

// Uploads that no message uses are deleted a day later (uploads.go); sent
// ones are kept, whoever uploaded them.

type uploadsNode struct {
	*vmNode
	ch    *web.Channel
	agent string // an agent's token
}

func startUploadsNode(t *testing.T) *uploadsNode {
	t.Helper()
	n := startMediaNodeAs(t, web.APITestType, "requests_per_minute: 10000, messages_per_minute: 10000, conversations_per_hour: 10000")
	return &uploadsNode{vmNode: n, ch: web.APITestChannel(n.Service()), agent: n.agentToken()}
}

// agentUpload uploads a file through the console's endpoint.
func (n *uploadsNode) agentUpload(name string, file []byte) vmMedia {
	n.t.Helper()
	ct, body := multipartFile(n.t, "file", name, file)
	a := n.do("POST", "/api/v1/uploads", n.agent, ct, body, "")
	if a.status != http.StatusCreated {
		n.t.Fatalf("agent upload %s: %d %s", name, a.status, a.body)
	}
	var m vmMedia
	if err := json.Unmarshal(a.body, &m); err != nil {
		n.t.Fatal(err)
	}
	return m
}

// reply posts an agent's file reply naming key, and returns the status.
func (n *uploadsNode) reply(conv int64, id, key string) int {
	n.t.Helper()
	body := fmt.Sprintf(`{"client_id":%q,"kind":"file","media":{"key":%q}}`, id, key)
	a := n.do("POST", fmt.Sprintf("/api/v1/conversations/%d/messages", conv), n.agent, "application/json", []byte(body), "")
	if a.status != http.StatusCreated && a.status != http.StatusBadRequest {
		n.t.Fatalf("reply with %s: %d %s", key, a.status, a.body)
	}
	return a.status
}

// stored reports whether the file key (or a preview key) is in storage.
func (n *uploadsNode) stored(key string) bool {
	n.t.Helper()
	switch a := n.do("GET", "/api/v1/media/"+key, n.agent, "", nil, ""); a.status {
	case http.StatusOK:
		return true
	case http.StatusNotFound:
		return false
	default:
		n.t.Fatalf("GET media %s: %d %s", key, a.status, a.body)
		return false
	}
}

func (n *uploadsNode) sweep(at time.Time, afterList func()) int {
	n.t.Helper()
	got, err := n.ch.SweepUploads(context.Background(), at, afterList)
	if err != nil {
		n.t.Fatalf("sweep: %v", err)
	}
	return got
}

// records returns the stored upload records by key.
func (n *uploadsNode) records() map[string]map[string]any {
	n.t.Helper()
	kvs, err := n.Service().Store().Settings(context.Background(), "media.upload.", "", core.MaxBatchRead)
	if err != nil {
		n.t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, kv := range kvs {
		var rec map[string]any
		if err := json.Unmarshal([]byte(kv.Value), &rec); err != nil {
			n.t.Fatal(err)
		}
		out[kv.Key[len("media.upload."):]] = rec
	}
	return out
}

// editRecord rewrites the upload record of key with edit.
func (n *uploadsNode) editRecord(key string, edit func(map[string]any)) {
	n.t.Helper()
	rec, ok := n.records()[key]
	if !ok {
		n.t.Fatalf("no record of %s", key)
	}
	edit(rec)
	b, _ := json.Marshal(rec)
	if err := n.Service().Store().PutSetting(context.Background(), "media.upload."+key, string(b)); err != nil {
		n.t.Fatal(err)
	}
}

func TestUnsentUploadsAreDeletedAfterADay(t *testing.T) {
	n := startUploadsNode(t)
	ctx := context.Background()
	t0 := time.Now()
	s := n.visitor("Zhang")
	lp := &webtest.Poller{Client: n.cl, Token: s.Token}
	send := func(id, kind, key string) webtest.Frame {
		t.Helper()
		fs, err := lp.Post(ctx, map[string]any{"type": "send", "id": id, "kind": kind, "media": map[string]string{"key": key}})
		if err != nil || len(fs) != 1 {
			t.Fatalf("send %s: %v %+v", id, err, fs)
		}
		return fs[0]
	}

	sent := n.upload(s.Token, "cat.png", testPNG(t))
	unsent := n.upload(s.Token, "dog.png", testPNG(t))
	refused := n.upload(s.Token, "notes.txt", []byte("order #123\n")) // sent as an image: refused
	ack := send("m1", "image", sent.Key)
	if ack.Type != "ack" {
		t.Fatalf("send the image: %s", ack.Raw)
	}
	if f := send("m2", "image", refused.Key); f.Type != "error" || f.Error.Code != "bad_request" {
		t.Fatalf("a text file as an image: %s", f.Raw)
	}
	conv := ack.Message.ConversationID
	agentSent := n.agentUpload("reply.txt", []byte("the reply\n"))
	agentUnsent := n.agentUpload("draft.txt", []byte("a draft\n"))
	if st := n.reply(conv, "r1", agentSent.Key); st != http.StatusCreated {
		t.Fatalf("reply with the agent's upload: %d", st)
	}
	if unsent.Preview == "" || !n.stored(unsent.Preview) {
		t.Fatalf("the unsent image has no preview stored: %+v", unsent)
	}

	// Within the day nothing goes.
	if got := n.sweep(t0.Add(23*time.Hour), nil); got != 0 {
		t.Fatalf("a sweep within the day deleted %d", got)
	}
	for _, k := range []string{sent.Key, unsent.Key, refused.Key, agentSent.Key, agentUnsent.Key} {
		if !n.stored(k) {
			t.Fatalf("%s deleted within the day", k)
		}
	}

	// A day later, the three that no message used go, previews too; the
	// two sent stay and their records are dropped.
	if got := n.sweep(t0.Add(25*time.Hour), nil); got != 3 {
		t.Fatalf("the sweep deleted %d uploads, want 3", got)
	}
	for k, want := range map[string]bool{sent.Key: true, sent.Preview: true, agentSent.Key: true,
		unsent.Key: false, unsent.Preview: false, refused.Key: false, agentUnsent.Key: false} {
		if got := n.stored(k); got != want {
			t.Errorf("%s stored: %v, want %v", k, got, want)
		}
	}
	if recs := n.records(); len(recs) != 0 {
		t.Errorf("records left after the sweep: %v", recs)
	}
	// The visitor still downloads the sent image through its message.
	if a := n.do("GET", "/api/v1/visitor/media/"+sent.Key+"?message_id="+itoa(ack.Message.ID), s.Token, "", nil, ""); a.status != http.StatusOK {
		t.Errorf("download of the sent image: %d %s", a.status, a.body)
	}
	// A deleted upload cannot be sent.
	if f := send("m3", "image", unsent.Key); f.Type != "error" || f.Error.Code != "not_found" {
		t.Errorf("send of a deleted upload: %s", f.Raw)
	}
	if st := n.reply(conv, "r2", agentUnsent.Key); st != http.StatusBadRequest {
		t.Errorf("reply with a deleted upload: %d", st)
	}
	if got := n.sweep(t0.Add(26*time.Hour), nil); got != 0 {
		t.Errorf("a second sweep deleted %d", got)
	}
}

func TestUploadSweepRacesAndOldRecords(t *testing.T) {
	n := startUploadsNode(t)
	t0 := time.Now()
	conv := n.ingestFrom("Li")

	// A reply lands after the sweep read the record and before it settles
	// it: the file stays with the message.
	raced := n.agentUpload("raced.txt", []byte("raced\n"))
	got := n.sweep(t0.Add(25*time.Hour), func() {
		if st := n.reply(conv, "race", raced.Key); st != http.StatusCreated {
			t.Errorf("reply during the sweep: %d", st)
		}
	})
	if got != 0 || !n.stored(raced.Key) {
		t.Fatalf("a file sent during the sweep: deleted %d, stored %v", got, n.stored(raced.Key))
	}

	// An upload the sweep has begun to delete cannot be sent, even by an
	// agent (who may send any stored file) while the file is still there;
	// the next sweep finishes it, young as it is.
	doomed := n.agentUpload("doomed.txt", []byte("doomed\n"))
	n.editRecord(doomed.Key, func(rec map[string]any) { rec["expired"] = true })
	if st := n.reply(conv, "doomed", doomed.Key); st != http.StatusBadRequest {
		t.Fatalf("reply with an expiring upload: %d", st)
	}
	if got := n.sweep(t0, nil); got != 1 || n.stored(doomed.Key) {
		t.Fatalf("finishing an expired upload: deleted %d, stored %v", got, n.stored(doomed.Key))
	}

	// Records written before uploads were dated, or by a node of that
	// version (which sends without marking): dated at the first sweep that
	// sees them, and a day later the file a message carries stays, the
	// other goes; both records go.
	usedOld := n.agentUpload("used.txt", []byte("used\n"))
	unusedOld := n.agentUpload("unused.txt", []byte("unused\n"))
	for _, k := range []string{usedOld.Key, unusedOld.Key} {
		n.editRecord(k, func(rec map[string]any) { delete(rec, "at") })
	}
	n.storeUnmarked(conv, usedOld)
	if got := n.sweep(t0.Add(25*time.Hour), nil); got != 0 || !n.stored(usedOld.Key) || !n.stored(unusedOld.Key) {
		t.Fatalf("undated records: deleted %d", got)
	}
	if recs := n.records(); recs[usedOld.Key] == nil || recs[unusedOld.Key] == nil {
		t.Fatal("an undated record was dropped at once")
	}
	if got := n.sweep(t0.Add(26*time.Hour), nil); got != 0 || !n.stored(unusedOld.Key) {
		t.Fatalf("an hour after dating: deleted %d", got)
	}
	if got := n.sweep(t0.Add(50*time.Hour), nil); got != 1 || !n.stored(usedOld.Key) || n.stored(unusedOld.Key) {
		t.Fatalf("a day later: deleted %d; want only the unused file gone", got)
	}
	if recs := n.records(); recs[usedOld.Key] != nil || recs[unusedOld.Key] != nil {
		t.Fatalf("records kept after their day: %v", recs)
	}
}

// storeUnmarked stores an agent's reply carrying m without marking its
// upload sent, as a node of an earlier version did.
func (n *uploadsNode) storeUnmarked(conv int64, m vmMedia) {
	n.t.Helper()
	agent := n.Agent(n.t, "alice@example.com")
	_, err := n.Service().Reply(context.Background(), agent.ID, conv, core.Message{Kind: core.KindFile,
		Media: &core.Media{Key: m.Key, Name: m.Name, Type: m.Type, Size: m.Size}})
	if err != nil {
		n.t.Fatal(err)
	}
}

func TestUploadsOfRefusedOrUnmarkedSends(t *testing.T) {
	n := startUploadsNode(t)
	t0 := time.Now()
	conv := n.ingestFrom("Wang")

	// A reply that the store refuses (no such conversation) marks the
	// upload, but no message carries it: it goes a day later all the same.
	refused := n.agentUpload("refused.txt", []byte("refused\n"))
	if a := n.do("POST", "/api/v1/conversations/987654/messages", n.agent, "application/json",
		[]byte(`{"client_id":"x1","kind":"file","media":{"key":"`+refused.Key+`"}}`), ""); a.status != http.StatusNotFound {
		t.Fatalf("reply to no conversation: %d %s", a.status, a.body)
	}
	// A reply from a node that does not mark uploads: its file stays.
	unmarked := n.agentUpload("unmarked.txt", []byte("unmarked\n"))
	n.storeUnmarked(conv, unmarked)
	// A send an instant before the sweep: left alone for now, whatever its
	// message's fate.
	late := n.agentUpload("late.txt", []byte("late\n"))

	at := t0.Add(25 * time.Hour)
	n.editRecord(late.Key, func(rec map[string]any) { rec["sent_at"] = at.Add(-time.Minute).UTC().Format(time.RFC3339Nano) })
	if got := n.sweep(at, nil); got != 1 || n.stored(refused.Key) || !n.stored(unmarked.Key) || !n.stored(late.Key) {
		t.Fatalf("deleted %d; stored: refused %v, unmarked %v, late %v; want only the refused one gone",
			got, n.stored(refused.Key), n.stored(unmarked.Key), n.stored(late.Key))
	}
	if got := n.sweep(at.Add(2*time.Hour), nil); got != 1 || n.stored(late.Key) {
		t.Fatalf("after the send's grace: deleted %d, late stored %v", got, n.stored(late.Key))
	}
}

// ingestFrom starts a conversation from a web visitor and returns its id.
func (n *uploadsNode) ingestFrom(name string) int64 {
	n.t.Helper()
	res, err := n.Service().Ingest(context.Background(), core.Inbound{Channel: "web", ExternalID: "a:" + name, Name: name,
		Message: core.Message{Kind: core.KindText, Text: "hello"}})
	if err != nil {
		n.t.Fatal(err)
	}
	return res.Conversation.ID
}
