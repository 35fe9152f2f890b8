package media_test

import (
	"bytes"
	"context"
	"errors"
	"image/jpeg"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// FuzzCheckKey: a key either is refused with ErrInvalid, or is one plain,
// local file name that every backend accepts too.
func FuzzCheckKey(f *testing.F) {
	for _, k := range badKeys {
		f.Add(k)
	}
	f.Add("0123456789abcdef0123456789abcdef.png")
	f.Add("0123456789abcdef0123456789abcdef.preview.jpg")
	f.Fuzz(func(t *testing.T, key string) {
		err := media.CheckKey(key)
		if err != nil {
			if !errors.Is(err, core.ErrInvalid) {
				t.Fatalf("CheckKey(%q) = %v, not ErrInvalid", key, err)
			}
			return
		}
		if !filepath.IsLocal(key) || strings.ContainsAny(key, `/\:`) || strings.HasPrefix(key, ".") || strings.Contains(key, "..") {
			t.Fatalf("CheckKey accepted %q", key)
		}
		if err := media.CheckBackendKey(key); err != nil {
			t.Fatalf("valid key %q refused by CheckBackendKey: %v", key, err)
		}
	})
}

// FuzzCheckBackendKey: an accepted backend key is a single local path
// element that cannot be hidden or climb out.
func FuzzCheckBackendKey(f *testing.F) {
	for _, k := range badKeys {
		f.Add(k)
	}
	f.Add("abcd.e")
	f.Fuzz(func(t *testing.T, key string) {
		if media.CheckBackendKey(key) != nil {
			return
		}
		if !filepath.IsLocal(key) || filepath.Base(key) != key || strings.HasPrefix(key, ".") ||
			strings.Contains(key, "..") || strings.ContainsAny(key, `/\: `) || len(key) < 5 {
			t.Fatalf("CheckBackendKey accepted %q", key)
		}
	})
}

// FuzzSave: Save never panics on any bytes; what it stores reads back
// unchanged, and a preview, when made, is a JPEG within bounds.
func FuzzSave(f *testing.F) {
	f.Add([]byte("hello"), "a.txt")
	f.Add(pngBytes(f, testImage(30, 20)), "a.png")
	f.Add(jpegBytes(f, testImage(30, 20)), "a.jpg")
	f.Add(gifBytes(f, testImage(30, 20)), "a.gif")
	f.Add(withExif(jpegBytes(f, testImage(16, 8)), 8, "x"), "exif.jpg")
	f.Add(pngHeaderOnly(1<<31-1, 1<<31-1), "bomb.png")
	f.Add(pngHeaderOnly(64, 64), "short.png")
	f.Add([]byte("<svg xmlns='http://www.w3.org/2000/svg'/>"), "x.svg")
	f.Add([]byte("RIFF\x00\x00\x00\x00WEBPVP8 "), "x.webp")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		b := newFake()
		s := newStore(t, b, media.Options{Allowed: []string{"image/*", "text/*", "application/*", "audio/*", "video/*"}, PreviewMax: 32, MaxBytes: 1 << 20, MaxPixels: 1 << 20})
		m, err := s.Save(context.Background(), bytes.NewReader(data), name)
		if err != nil {
			if len(b.Keys()) != 0 {
				t.Fatalf("failed Save (%v) left %v", err, b.Keys())
			}
			return
		}
		if m.Size != int64(len(data)) || media.CheckKey(m.Key) != nil {
			t.Fatalf("saved %+v for %d bytes", m, len(data))
		}
		if !utf8.ValidString(m.Name) || len(m.Name) > 255 || strings.ContainsAny(m.Name, `/\`) ||
			strings.IndexFunc(m.Name, unicode.IsControl) >= 0 {
			t.Fatalf("unsafe name %q", m.Name)
		}
		rc, _, err := s.Open(context.Background(), m.Key)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data) {
			t.Fatal("stored bytes differ")
		}
		if m.Preview == "" {
			return
		}
		rc, _, err = s.OpenPreview(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		cfg, err := jpeg.DecodeConfig(rc)
		if err != nil {
			t.Fatalf("preview is not a JPEG: %v", err)
		}
		if cfg.Width > 32 || cfg.Height > 32 || cfg.Width < 1 || cfg.Height < 1 {
			t.Fatalf("preview %dx%d exceeds 32", cfg.Width, cfg.Height)
		}
	})
}

// FuzzSanitizeName: the result is valid UTF-8, at most 255 bytes, one path
// element without control characters, and sanitizing is idempotent.
func FuzzSanitizeName(f *testing.F) {
	for _, s := range []string{"a.txt", "../../x", `C:\a\b.png`, "photo\u202egnp.exe", strings.Repeat("é", 300) + ".pdf", " . ", "a\x00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got := media.SanitizeName(name)
		if !utf8.ValidString(got) || len(got) > 255 || strings.ContainsAny(got, `/\`) || got == "." || got == ".." {
			t.Fatalf("SanitizeName(%q) = %q", name, got)
		}
		for _, r := range got {
			if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
				t.Fatalf("SanitizeName(%q) = %q keeps %U", name, got, r)
			}
		}
		if again := media.SanitizeName(got); again != got {
			t.Fatalf("not idempotent: %q → %q → %q", name, got, again)
		}
	})
}
