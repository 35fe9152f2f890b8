package bridge

import (
	"reflect"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
)

// TestSnapshotCoversEveryReference guards snapshotUpdates against a field
// added to core's types later: every pointer, slice, map or interface
// reachable from core.Update must be one snapshotUpdates copies.
func TestSnapshotCoversEveryReference(t *testing.T) {
	copied := map[string]bool{
		"Update.Conversation": true, "Update.Message": true, "Update.Receipt": true, "Update.Typing": true,
		"Message.Media": true, "Message.Event": true,
	}
	timeType := reflect.TypeOf(time.Time{})
	var walk func(typ reflect.Type)
	seen := map[reflect.Type]bool{}
	walk = func(typ reflect.Type) {
		if seen[typ] || typ == timeType {
			return
		}
		seen[typ] = true
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := typ.Name() + "." + f.Name
			ft := f.Type
			switch ft.Kind() {
			case reflect.Pointer:
				if !copied[name] {
					t.Errorf("%s is a pointer that snapshotUpdates does not copy", name)
				}
				if ft.Elem().Kind() == reflect.Struct {
					walk(ft.Elem())
				}
			case reflect.Slice, reflect.Map, reflect.Interface, reflect.Chan, reflect.Func:
				t.Errorf("%s (%s) is shared by snapshotUpdates", name, ft.Kind())
			case reflect.Struct:
				walk(ft)
			}
		}
	}
	walk(reflect.TypeOf(core.Update{}))
}

// TestSnapshotSharesNothing: changing everything the original updates point
// to leaves the snapshot as it was.
func TestSnapshotSharesNothing(t *testing.T) {
	orig := []core.Update{
		{Type: core.UpdateMessage, Conversation: &core.Conversation{ID: 7}, Message: &core.Message{
			ID: 1, ConversationID: 7, Text: "hi", Media: &core.Media{Key: "k"}, Event: &core.Event{AgentID: 3}}},
		{Type: core.UpdateReceipt, Receipt: &core.Receipt{ConversationID: 7, UpToSeq: 4}},
		{Type: core.UpdateTyping, Typing: &core.Typing{ConversationID: 7}},
	}
	snap := snapshotUpdates(orig)
	want := []core.Update{
		{Type: core.UpdateMessage, Conversation: &core.Conversation{ID: 7}, Message: &core.Message{
			ID: 1, ConversationID: 7, Text: "hi", Media: &core.Media{Key: "k"}, Event: &core.Event{AgentID: 3}}},
		{Type: core.UpdateReceipt, Receipt: &core.Receipt{ConversationID: 7, UpToSeq: 4}},
		{Type: core.UpdateTyping, Typing: &core.Typing{ConversationID: 7}},
	}
	orig[0].Type = core.UpdateStatus
	orig[0].Conversation.ID = 8
	orig[0].Message.Text = "changed"
	orig[0].Message.Media.Key = "changed"
	orig[0].Message.Event.AgentID = 4
	orig[1].Receipt.UpToSeq = 9
	orig[2].Typing.ConversationID = 8
	if !reflect.DeepEqual(snap, want) {
		t.Errorf("snapshot changed with the original:\n got %+v\nwant %+v", snap, want)
	}
}
