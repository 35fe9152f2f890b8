package testenv_test

import (
	"testing"

	"github.com/kefuhq/kefu/internal/testenv"
)

// fakeT records what Service does to a test.
type fakeT struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Skipf(format string, args ...any) {
	f.skipped = true
	f.msg = format
	panic(f)
}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = true
	f.msg = format
	panic(f)
}

func run(name string) (got string, f *fakeT) {
	f = &fakeT{}
	defer func() {
		if r := recover(); r != nil && r != any(f) {
			panic(r)
		}
	}()
	return testenv.Service(f, name), f
}

func TestService(t *testing.T) {
	const name = "KEFU_TEST_TESTENV_PROBE"
	tests := []struct {
		name            string
		value, require  string
		want            string
		skipped, failed bool
	}{
		{name: "set", value: "redis://x", want: "redis://x"},
		{name: "set and required", value: "redis://x", require: "1", want: "redis://x"},
		{name: "unset skips", skipped: true},
		{name: "unset and required fails", require: "1", failed: true},
		{name: "require other than 1 skips", require: "yes", skipped: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(name, tc.value)
			t.Setenv(testenv.RequireVar, tc.require)
			got, f := run(name)
			if got != tc.want || f.skipped != tc.skipped || f.failed != tc.failed {
				t.Errorf("got %q skipped=%v failed=%v, want %q skipped=%v failed=%v",
					got, f.skipped, f.failed, tc.want, tc.skipped, tc.failed)
			}
		})
	}
}
