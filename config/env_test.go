package config

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"HOST": "db.local", "EMPTY": "", "DOLLAR": "a$b", "REF": "${HOST}"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{name: "no reference", in: "plain text", want: "plain text"},
		{name: "empty", in: "", want: ""},
		{name: "set", in: "${HOST}", want: "db.local"},
		{name: "inside text", in: "postgres://${HOST}:5432/kefu", want: "postgres://db.local:5432/kefu"},
		{name: "two references", in: "${HOST}/${HOST}", want: "db.local/db.local"},
		{name: "set and empty", in: "[${EMPTY}]", want: "[]"},
		{name: "default unused", in: "${HOST:-other}", want: "db.local"},
		{name: "default when unset", in: "${NOPE:-fallback}", want: "fallback"},
		{name: "default when empty", in: "${EMPTY:-fallback}", want: "fallback"},
		{name: "empty default", in: "${NOPE:-}", want: ""},
		{name: "default with spaces and colons", in: "${NOPE:-a b:c-d}", want: "a b:c-d"},
		{name: "escaped dollar", in: "pa$$word", want: "pa$word"},
		{name: "escaped reference", in: "$${HOST}", want: "${HOST}"},
		{name: "values are not expanded again", in: "${REF}${DOLLAR}", want: "${HOST}a$b"},
		{name: "unicode around", in: "é${HOST}ü", want: "édb.localü"},
		{name: "unset", in: "${NOPE}", err: "environment variable NOPE is not set (write ${NOPE:-default} to give a default)"},
		{name: "unterminated", in: "x ${HOST", err: `unterminated variable reference "${HOST" (missing })`},
		{name: "empty name", in: "${}", err: `bad variable reference "${}" (write ${NAME} or ${NAME:-default}; NAME is letters, digits and _)`},
		{name: "name starts with digit", in: "${1X}", err: `bad variable reference "${1X}" (write ${NAME} or ${NAME:-default}; NAME is letters, digits and _)`},
		{name: "bad character", in: "${A.B}", err: `bad variable reference "${A.B}" (write ${NAME} or ${NAME:-default}; NAME is letters, digits and _)`},
		{name: "other operator", in: "${A-b}", err: `bad variable reference "${A-b}" (write ${NAME} or ${NAME:-default}; NAME is letters, digits and _)`},
		{name: "nested default", in: "${A:-${B}}", err: `bad variable reference "${A:-${B}" (a default cannot contain $)`},
		{name: "lone dollar", in: "$HOST", err: `lone $ in "$HOST" (write $$ for a literal $, ${NAME} for a variable)`},
		{name: "trailing dollar", in: "cost 5$", err: `lone $ in "$" (write $$ for a literal $, ${NAME} for a variable)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := expand(tc.in, lookup)
			switch {
			case tc.err != "" && err == nil:
				t.Fatalf("got %q, want error %q", got, tc.err)
			case tc.err != "" && err.Error() != tc.err:
				t.Fatalf("error %q, want %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case got != tc.want:
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"addr", "public_url", "trusted_proxies"}
	for _, tc := range []struct{ in, want string }{
		{"adr", ` (did you mean "addr"?)`},
		{"Addr", ` (did you mean "addr"?)`},
		{"public_uri", ` (did you mean "public_url"?)`},
		{"listen", ""},
		{"", ""},
	} {
		if got := suggest(tc.in, known); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLineOf(t *testing.T) {
	src := `server:
  addr: ":80"
  trusted_proxies:
    - 10.0.0.0/8
    - bad
base: &base
  token: x
channels:
  tg:
    <<: *base
    enabled: true
`
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	root := doc.Content[0]
	for _, tc := range []struct {
		key  string
		want int
	}{
		{"server", 1},
		{"server.addr", 2},
		{"server.trusted_proxies[1]", 5},
		{"server.trusted_proxies[7]", 3},
		{"server.public_url", 1},
		{"channels.tg.enabled", 11},
		{"channels.tg.token", 7},
		{"channels.tg.mode", 9},
		{"node_id", 0},
		{"", 0},
	} {
		if got := lineOf(root, tc.key); got != tc.want {
			t.Errorf("lineOf(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
	if got := strings.Join(splitKey("agents[1].email"), " "); got != "agents [1] email" {
		t.Errorf("splitKey = %s", got)
	}
}
