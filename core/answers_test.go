package core_test

import (
	"context"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Reopen and a transfer back to the queue answer the conversation as
// routing left it (the API's 200 body), not as it was before routing.
func TestAnswersShowTheConversationAsRouted(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, core.Config{Strategy: core.LeastBusy, MaxOpenPerAgent: 8, ReopenWithin: time.Hour}, 1, 0)
	a := f.agents[0]
	c := f.say("c", "1", "hi").Conversation // waits: nobody online
	if _, err := f.svc.Close(ctx, a.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	defer f.presence.Connect(a.ID)()
	got, err := f.svc.Reopen(ctx, a.ID, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c.ID); got.Status != now.Status || got.AssigneeID != now.AssigneeID || now.AssigneeID != a.ID {
		t.Errorf("Reopen answered %s/%d, the conversation is %s/%d", got.Status, got.AssigneeID, now.Status, now.AssigneeID)
	}
	// The only agent sends it back to the queue: routing gives it back.
	got, err = f.svc.Transfer(ctx, a.ID, c.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if now := f.conv(c.ID); got.Status != now.Status || got.AssigneeID != now.AssigneeID {
		t.Errorf("Transfer answered %s/%d, the conversation is %s/%d", got.Status, got.AssigneeID, now.Status, now.AssigneeID)
	}
}
