package slack

import (
	"strings"
	"testing"
)

// A cut text does not end inside one of escape's entities.
func TestTruncateKeepsEntitiesWhole(t *testing.T) {
	const mark = " … (cut; the console has all of it)"
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a &amp; b", 100, "a &amp; b"},
		{strings.Repeat("x", 10) + "&amp;" + strings.Repeat("y", 50), 10 + 3 + len(mark), strings.Repeat("x", 10) + mark},
		{strings.Repeat("x", 10) + "&lt;" + strings.Repeat("y", 50), 10 + 4 + len(mark), strings.Repeat("x", 10) + "&lt;" + mark},
		{strings.Repeat("x", 10) + "&gt;" + strings.Repeat("y", 50), 10 + 2 + len(mark), strings.Repeat("x", 10) + mark},
		{strings.Repeat("x", 60), 20 + len(mark), strings.Repeat("x", 20) + mark},
	} {
		if got := truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// However the agent types the prefix, a note stays a note: it must never
// reach the customer.
func TestNoteText(t *testing.T) {
	for _, tc := range []struct {
		in     string
		want   string
		isNote bool
	}{
		{"note: VIP, refund approved", "VIP, refund approved", true},
		{"NOTE:x", "x", true},
		{"note：客户是VIP，已批准退款", "客户是VIP，已批准退款", true},
		{"*note:* VIP", "VIP", true},
		{"_note_: VIP", "VIP", true},
		{"note : VIP", "VIP", true},
		{"notebook is ready", "notebook is ready", false},
		{"note that your parcel left", "note that your parcel left", false},
		{"Your note: see below", "Your note: see below", false},
		{"hello", "hello", false},
	} {
		got, isNote := noteText(tc.in)
		if got != tc.want || isNote != tc.isNote {
			t.Errorf("noteText(%q) = %q, %v; want %q, %v", tc.in, got, isNote, tc.want, tc.isNote)
		}
	}
}
