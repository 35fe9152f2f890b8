package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Batch reads for lists: Contacts and LastMessages.

func testContactsBatch(t *testing.T, s core.Store) {
	a := ingest(t, s, "web", "a", "hi", t0).Contact
	b := ingest(t, s, "wa", "b", "hi", t0).Contact
	ingest(t, s, "wa", "c", "hi", t0)

	got, err := s.Contacts(ctx, []int64{b.ID, 424242, a.ID, a.ID})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(x, y core.Contact) int { return int(x.ID - y.ID) })
	if len(got) != 2 || got[0].ID != a.ID || got[1].ID != b.ID {
		t.Fatalf("Contacts = %+v, want %d and %d", got, a.ID, b.ID)
	}
	if got[0].Name != "Customer a" || !got[0].CreatedAt.Equal(a.CreatedAt) {
		t.Errorf("contact a = %+v, want %+v", got[0], a)
	}
	if none, err := s.Contacts(ctx, nil); err != nil || len(none) != 0 {
		t.Errorf("Contacts(nil) = %+v, %v", none, err)
	}
	_, err = s.Contacts(ctx, make([]int64, core.MaxBatchRead+1))
	wantErr(t, "too many ids", err, core.ErrInvalid)
}

func testLastMessages(t *testing.T, s core.Store) {
	alice := newAgent(t, s, "alice@example.com")
	c1 := ingest(t, s, "web", "a", "first", t0).Conversation.ID
	reply := appendMsg(t, s, c1, agentText(alice.ID, "reply", at(time.Second))).Message
	// An event after the reply is not a preview.
	assign(t, s, c1, alice.ID, 0, at(2*time.Second))

	c2 := ingest(t, s, "web", "b", "hello", t0).Conversation.ID
	note := agentText(alice.ID, "a note", at(3*time.Second))
	note.Visibility = core.Internal
	noteMsg := appendMsg(t, s, c2, note).Message

	c3 := ingest(t, s, "web", "c", "only", t0)

	got, err := s.LastMessages(ctx, []int64{c1, c2, c3.Conversation.ID, 424242})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("LastMessages = %d entries, want 3: %+v", len(got), got)
	}
	sameMessage(t, "c1", got[c1], reply)
	sameMessage(t, "c2 (a note counts)", got[c2], noteMsg)
	sameMessage(t, "c3", got[c3.Conversation.ID], c3.Message)

	if none, err := s.LastMessages(ctx, nil); err != nil || len(none) != 0 {
		t.Errorf("LastMessages(nil) = %+v, %v", none, err)
	}
	_, err = s.LastMessages(ctx, make([]int64, core.MaxBatchRead+1))
	wantErr(t, "too many ids", err, core.ErrInvalid)
}
