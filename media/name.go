package media

import (
	"mime"
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

// runnable are extensions under which a saved file is run or rendered with
// script when it is opened: by a browser (HTML, SVG, XML), or by the
// system (Windows Script Host, installers, shortcuts, shell scripts).
var runnable = map[string]bool{
	"html": true, "htm": true, "xhtml": true, "shtml": true, "mht": true, "mhtml": true,
	"svg": true, "svgz": true, "xml": true, "xsl": true,
	"js": true, "mjs": true, "cjs": true, "jse": true, "vbs": true, "vbe": true, "wsf": true, "wsh": true, "hta": true,
	"bat": true, "cmd": true, "com": true, "exe": true, "scr": true, "pif": true, "msi": true, "msp": true,
	"ps1": true, "psm1": true, "lnk": true, "url": true, "scf": true, "inf": true, "reg": true, "cpl": true,
	"chm": true, "jar": true, "sh": true, "command": true, "app": true,
}

// FileName returns the name a stored file goes by when a person calls it
// name: SanitizeName's, made safe to open (see nameFor). key and typ are
// the stored object's key and type.
func FileName(name, key, typ string) string {
	ext := ""
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		ext = key[i+1:]
	}
	return nameFor(SanitizeName(name), typ, ext)
}

// nameFor returns the name a saved file of type typ (stored with extension
// ext) goes by: name, unless its extension would make the file run when
// opened and the content is not of that kind; then the real type's
// extension is added ("invoice.html" holding text → "invoice.html.txt"),
// so that downloading and opening it shows text instead of running it.
func nameFor(name, typ, ext string) string {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return name
	}
	given := strings.ToLower(name[i+1:])
	if given == ext {
		return name
	}
	if !runnable[given] && !active(mediaType(mime.TypeByExtension("."+given))) {
		return name
	}
	if t := mediaType(mime.TypeByExtension("." + given)); t != "" && t == typ {
		return name
	}
	return name + "." + ext
}

// mediaType is the type of a Content-Type value, without parameters.
func mediaType(v string) string {
	t, _, err := mime.ParseMediaType(v)
	if err != nil {
		return ""
	}
	return t
}
