package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type kindsInner struct {
	A string `yaml:"a"` // inlined key
}

type kinds struct {
	kindsInner `yaml:",inline"`
	Ptr        *string        `yaml:"ptr"`    // pointer
	Shared     *int           `yaml:"shared"` // pointer with a default
	Prefix     netip.Prefix   `yaml:"prefix"` // encoding.TextUnmarshaler
	Small      uint8          `yaml:"small"`  // unsigned, 8 bits
	Ratio      float64        `yaml:"ratio"`  // float
	Counts     map[string]int `yaml:"counts"` // map
	List       []string       `yaml:"list"`   // list
	Kept       string         `yaml:"kept"`   // null keeps the default
	Wait       *time.Duration `yaml:"wait"`   // pointer to duration
	NoTag      bool           // key "notag"
	Skipped    string         `yaml:"-"` // not a key
	unexported string         //nolint:unused // not a key
}

func decodeString(t *testing.T, src string, v any, env map[string]string) Errors {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	d := &decoder{file: "k.yaml", lookup: func(k string) (string, bool) { s, ok := env[k]; return s, ok }}
	d.value(doc.Content[0], "", reflect.ValueOf(v).Elem())
	d.errs.sort()
	return d.errs
}

func TestDecodeKinds(t *testing.T) {
	shared := 7
	got := kinds{Kept: "default", Shared: &shared, List: []string{"old"}}
	src := `
a: inlined
ptr: ${P}
shared: 8
prefix: 10.1.0.0/16
small: 255
ratio: 0.25
counts: {x: 1, y: 2}
list: [new]
kept: ~
wait: 1m
notag: true
`
	if errs := decodeString(t, src, &got, map[string]string{"P": "from-env"}); len(errs) > 0 {
		t.Fatal(errs.Error())
	}
	ptr, wait := "from-env", time.Minute
	eight := 8
	want := kinds{
		kindsInner: kindsInner{A: "inlined"},
		Ptr:        &ptr,
		Shared:     &eight,
		Prefix:     netip.MustParsePrefix("10.1.0.0/16"),
		Small:      255,
		Ratio:      0.25,
		Counts:     map[string]int{"x": 1, "y": 2},
		List:       []string{"new"},
		Kept:       "default",
		Wait:       &wait,
		NoTag:      true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if shared != 7 {
		t.Errorf("decoding wrote through a default pointer: shared = %d", shared)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"skipped key", "skipped: x", `k.yaml:1: skipped: unknown key`},
		{"unexported key", "unexported: x", `k.yaml:1: unexported: unknown key`},
		{"text unmarshaler", "prefix: 10.1.0.0/99", `k.yaml:1: prefix: netip.ParsePrefix("10.1.0.0/99"): prefix length out of range`},
		{"uint range", "small: 256", `k.yaml:1: small: 256 is out of range`},
		{"negative uint", "small: -1", `k.yaml:1: small: expected a non-negative integer, got "-1"`},
		{"float", "ratio: half", `k.yaml:1: ratio: expected a number, got "half"`},
		{"map value", "counts: {x: one}", `k.yaml:1: counts.x: expected an integer, got "one"`},
		{"map duplicate", "counts: {x: 1, x: 2}", `k.yaml:1: counts.x: duplicate key (first at line 1)`},
		{"non-string key", "? [a]\n: 1", `k.yaml:1: keys must be strings, got a list`},
		{"list item", "list: [a, [b]]", `k.yaml:1: list[1]: expected a string, got a list`},
		{"bool", "notag: yes", `k.yaml:1: notag: expected true or false, got "yes"`},
		{"merge scalar", "<<: x", `k.yaml:1: << must merge a mapping, got "x"`},
		{"env in map", "counts: {x: '${N}'}", `k.yaml:1: counts.x: environment variable N is not set (write ${N:-default} to give a default)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v kinds
			errs := decodeString(t, tc.src, &v, nil)
			if got := errs.Error(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestMergeKeysLoseToOwnKeys(t *testing.T) {
	src := `
base: &base {a: from-base, small: 1}
x:
  small: 2
  <<: *base
`
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	_, x := findKey(doc.Content[0], "x")
	var v kinds
	d := &decoder{lookup: func(string) (string, bool) { return "", false }}
	d.value(x, "x", reflect.ValueOf(&v).Elem())
	if len(d.errs) > 0 || v.A != "from-base" || v.Small != 2 {
		t.Errorf("got %+v, errors %v", v, strings.TrimSpace(d.errs.Error()))
	}
}
