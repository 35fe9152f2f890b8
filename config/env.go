package config

import (
	"fmt"
	"strings"
)

// expand returns s with environment references replaced:
//
//	${NAME}          the value of NAME; an error if NAME is not set
//	${NAME:-default} the value of NAME, or default when NAME is unset or empty
//	$$               a literal $
//
// Any other $ is an error, so that a bare $NAME (which would otherwise be
// kept silently as text) is caught. The default is taken literally up to the
// first }, and values read from the environment are not expanded again.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		s = s[i:]
		switch {
		case strings.HasPrefix(s, "$$"):
			b.WriteByte('$')
			s = s[2:]
		case strings.HasPrefix(s, "${"):
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return "", fmt.Errorf("unterminated variable reference %q (missing })", clip(s))
			}
			ref, inner := s[:end+1], s[2:end]
			s = s[end+1:]
			name, def, hasDef := strings.Cut(inner, ":-")
			if !validEnvName(name) {
				return "", fmt.Errorf("bad variable reference %q (write ${NAME} or ${NAME:-default}; NAME is letters, digits and _)", clip(ref))
			}
			if strings.Contains(def, "$") {
				return "", fmt.Errorf("bad variable reference %q (a default cannot contain $)", clip(ref))
			}
			v, ok := lookup(name)
			switch {
			case hasDef && v == "":
				v = def
			case !ok:
				return "", fmt.Errorf("environment variable %s is not set (write ${%s:-default} to give a default)", name, name)
			}
			b.WriteString(v)
		default:
			return "", fmt.Errorf("lone $ in %q (write $$ for a literal $, ${NAME} for a variable)", clip(s))
		}
	}
}

// validEnvName reports whether name is a portable environment variable name.
func validEnvName(name string) bool {
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// clip shortens s for use in an error message.
func clip(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	// Do not cut a UTF-8 sequence in half.
	n := max
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
