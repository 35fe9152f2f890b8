package media

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNameBytes is the longest file name kept, in bytes of UTF-8.
const maxNameBytes = 255

// SanitizeName returns the file name a person gave a file, made safe to
// keep and show: only its last path element (after any '/' or '\', so
// "C:\fakepath\a.png" and "../../etc/passwd" keep "a.png" and "passwd"),
// valid UTF-8, without control or invisible formatting characters
// (including the bidirectional overrides that make "exe.png" out of
// "\u202egnp.exe"), trimmed of surrounding spaces, and at most 255 bytes,
// shortened in its stem so that a short extension survives. A name with
// nothing left, or that is "." or "..", becomes "". The name is for display
// and for Content-Disposition (which the HTTP layer must still encode); it
// never names anything in storage.
func SanitizeName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.ToValidUTF8(name, "")
	name = strings.Map(func(r rune) rune {
		switch {
		case unicode.IsSpace(r): // tabs, line breaks, line and paragraph separators, odd spaces
			return ' '
		case unicode.IsControl(r), unicode.Is(unicode.Cf, r): // other C0/C1 controls, bidi and zero-width marks
			return -1
		case r == utf8.RuneError, unicode.Is(unicode.Co, r), unicode.Is(unicode.Cs, r):
			return -1
		}
		return r
	}, name)
	name = strings.TrimSpace(name)
	if name == "." || name == ".." {
		return ""
	}
	if len(name) <= maxNameBytes {
		return name
	}
	ext := ""
	if i := strings.LastIndexByte(name, '.'); i > 0 && len(name)-i <= 16 {
		ext = name[i:]
	}
	stem := truncateUTF8(name[:len(name)-len(ext)], maxNameBytes-len(ext))
	return strings.TrimSpace(stem) + ext
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
