package media

import (
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// Sniffing uses github.com/gabriel-vasile/mimetype rather than
// net/http.DetectContentType. The standard sniffer implements the WHATWG
// algorithm for browsers, and for the files people send to support it falls
// short: Word, Excel and PowerPoint files (OOXML and OpenDocument) come out
// as application/zip and the legacy .doc/.xls/.ppt as
// application/octet-stream; AMR (WeChat and WeCom voice), ADTS AAC, MP3
// without an ID3 tag, M4A and QuickTime (.mov from iPhones) are not
// recognised at all. mimetype tells all of these apart from the first
// sniffLen bytes, and it names JSON as application/json rather than
// text/plain, so a provider's JSON error body served with status 200 is
// refused instead of kept as a "text file".

// sniffLen is how many leading bytes decide the type: mimetype's default
// read limit. (mimetype.SetLimit is process-wide; kefu leaves it alone.)
const sniffLen = 4096

// DefaultAllowed returns the types Save accepts when Options.Allowed is
// empty: common images, PDF, plain text and CSV, zip, office documents,
// the audio that messaging apps record, and MP4/QuickTime video. It leaves
// out everything a browser may execute (HTML, SVG, XML, JavaScript) and
// programs.
func DefaultAllowed() []string {
	return []string{
		"image/jpeg", "image/png", "image/gif", "image/webp",
		"application/pdf",
		"text/plain", "text/csv",
		"application/zip",
		"application/msword",
		"application/vnd.ms-excel",
		"application/vnd.ms-powerpoint",
		"application/vnd.openxmlformats-officedocument.wordprocessingml.document",
		"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
		"application/vnd.openxmlformats-officedocument.presentationml.presentation",
		"application/vnd.oasis.opendocument.text",
		"application/vnd.oasis.opendocument.spreadsheet",
		"application/vnd.oasis.opendocument.presentation",
		"audio/mpeg", "audio/ogg", "audio/amr", "audio/aac", "audio/mp4",
		"video/mp4", "video/quicktime",
	}
}

// extByType is the extension each known type is stored with; typeByExt
// reverses it for TypeOf. Types not listed use mimetype's extension.
var extByType = map[string]string{
	"image/jpeg":                    "jpg",
	"image/png":                     "png",
	"image/gif":                     "gif",
	"image/webp":                    "webp",
	"application/pdf":               "pdf",
	"text/plain":                    "txt",
	"text/csv":                      "csv",
	"application/zip":               "zip",
	"application/msword":            "doc",
	"application/vnd.ms-excel":      "xls",
	"application/vnd.ms-powerpoint": "ppt",
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   "docx",
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         "xlsx",
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
	"application/vnd.oasis.opendocument.text":                                   "odt",
	"application/vnd.oasis.opendocument.spreadsheet":                            "ods",
	"application/vnd.oasis.opendocument.presentation":                           "odp",
	"audio/mpeg":      "mp3",
	"audio/ogg":       "ogg",
	"audio/amr":       "amr",
	"audio/aac":       "aac",
	"audio/mp4":       "m4a",
	"video/mp4":       "mp4",
	"video/quicktime": "mov",
}

var typeByExt = func() map[string]string {
	m := make(map[string]string, len(extByType))
	for t, e := range extByType {
		m[e] = t
	}
	return m
}()

// canonical folds mimetype's names for one format into the one kefu stores:
// browsers and providers know these by the standard name.
var canonical = map[string]string{
	"audio/x-m4a":  "audio/mp4", // M4A: MP4 audio
	"video/x-m4v":  "video/mp4", // M4V: MP4 video
	"image/apng":   "image/png", // animated PNG is a PNG; decoders show frame one
	"audio/x-mp4a": "audio/mp4", // alias
}

// active reports whether typ is one a browser may run script from when it
// is served inline: HTML, JavaScript, and every XML type (SVG, XHTML, RSS…,
// since a browser renders XML documents and runs XHTML script in them). A
// wildcard pattern never matches these: allowing one takes its exact name.
func active(typ string) bool {
	switch typ {
	case "text/html", "text/javascript", "application/javascript", "application/x-javascript",
		"text/ecmascript", "application/ecmascript", "text/xsl":
		return true
	}
	return strings.HasSuffix(typ, "/xml") || strings.HasSuffix(typ, "+xml")
}

// sniffed is the outcome of sniffing: the type to store and test, the
// extension to store it with, and mimetype's answer for alias matching.
type sniffed struct {
	typ string
	ext string
	m   *mimetype.MIME
}

// sniff detects the type of content whose first bytes are head.
func sniff(head []byte) sniffed {
	m := mimetype.Detect(head)
	typ, _, err := mime.ParseMediaType(m.String())
	if err != nil {
		typ = "application/octet-stream"
	}
	if c, ok := canonical[typ]; ok {
		typ = c
	}
	ext, ok := extByType[typ]
	if !ok {
		ext = strings.TrimPrefix(m.Extension(), ".")
		if !validExt(ext) {
			ext = "bin"
		}
	}
	return sniffed{typ: typ, ext: ext, m: m}
}

// allowList matches sniffed types against Options.Allowed.
type allowList struct {
	exact    map[string]bool // "application/pdf"
	wildcard map[string]bool // "image" for "image/*"
}

// parseAllowed checks and compiles patterns, reporting every bad one.
func parseAllowed(patterns []string) (allowList, error) {
	a := allowList{exact: map[string]bool{}, wildcard: map[string]bool{}}
	var errs []error
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSpace(p))
		major, minor, ok := strings.Cut(p, "/")
		switch {
		case !ok || major == "" || minor == "" || strings.ContainsAny(major, "*/ ;") || strings.ContainsAny(minor, "/ ;"):
			errs = append(errs, fmt.Errorf("allowed type %q: want type/subtype or type/*", p))
		case minor == "*":
			a.wildcard[major] = true
		case strings.Contains(minor, "*"):
			errs = append(errs, fmt.Errorf("allowed type %q: a wildcard stands alone (type/*)", p))
		default:
			a.exact[p] = true
		}
	}
	return a, errors.Join(errs...)
}

// allows reports whether the sniffed type may be stored.
func (a allowList) allows(s sniffed) bool {
	if a.exact[s.typ] {
		return true
	}
	for t := range a.exact {
		if s.m.Is(t) { // an alias mimetype knows ("audio/x-wav" for "audio/wav")
			return true
		}
	}
	major, _, _ := strings.Cut(s.typ, "/")
	return a.wildcard[major] && !active(s.typ)
}
