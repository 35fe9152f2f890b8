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
