package web

import (
	"strings"
	"testing"
)

// The send frame's image and file forms (frames.go), as decodeFrame checks
// them before anything reaches the store.
func TestDecodeMediaSendFrames(t *testing.T) {
	const key = "0123456789abcdef0123456789abcdef.png"
	for _, tc := range []struct {
		name, frame, code string // code "": valid
	}{
		{"text, as before", `{"type":"send","id":"a","text":"hi"}`, ""},
		{"text, kind named", `{"type":"send","id":"a","kind":"text","text":"hi"}`, ""},
		{"image", `{"type":"send","id":"a","kind":"image","media":{"key":"` + key + `"}}`, ""},
		{"file with a caption and a name", `{"type":"send","id":"a","kind":"file","text":"see","media":{"key":"` + key + `","name":"a.pdf"}}`, ""},
		{"image without media", `{"type":"send","id":"a","kind":"image"}`, codeBadFrame},
		{"image with a path for a key", `{"type":"send","id":"a","kind":"image","media":{"key":"../../kefu.db"}}`, codeBadFrame},
		{"image with an empty key", `{"type":"send","id":"a","kind":"image","media":{"key":""}}`, codeBadFrame},
		{"a name too long", `{"type":"send","id":"a","kind":"file","media":{"key":"` + key + `","name":"` + longName + `"}}`, codeBadFrame},
		{"text with media", `{"type":"send","id":"a","text":"hi","media":{"key":"` + key + `"}}`, codeBadFrame},
		{"blank text", `{"type":"send","id":"a","kind":"text","text":" "}`, codeBadRequest},
		{"an unknown kind", `{"type":"send","id":"a","kind":"template","text":"x"}`, codeBadFrame},
		{"media of the wrong type", `{"type":"send","id":"a","kind":"image","media":"` + key + `"}`, codeBadFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := decodeFrame([]byte(tc.frame))
			switch {
			case tc.code == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.code != "" && err == nil:
				t.Fatalf("accepted %+v", f)
			case tc.code != "" && err.Code != tc.code:
				t.Fatalf("code %s (%s), want %s", err.Code, err.Msg, tc.code)
			}
		})
	}
}

var longName = strings.Repeat("n", maxMediaName+1)
