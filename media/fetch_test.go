package media_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

func get(t *testing.T, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestFetchIgnoresContentType(t *testing.T) {
	png := pngBytes(t, testImage(600, 300))
	html := []byte("<html><script>alert(1)</script></html>")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/png-says-html":
			w.Header().Set("Content-Type", "text/html")
			w.Header().Set("Content-Disposition", `attachment; filename="../../收据.png"`)
			_, _ = w.Write(png)
		case "/html-says-jpeg":
			w.Header().Set("Content-Type", "image/jpeg")
			_, _ = w.Write(html)
		}
	}))
	defer srv.Close()
	b := newFake()
	s := newStore(t, b, media.Options{})

	m, err := s.Fetch(context.Background(), srv.Client(), get(t, srv.URL+"/png-says-html"), "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "image/png" || m.Size != int64(len(png)) || m.Name != "收据.png" || m.Preview == "" {
		t.Fatalf("fetched %+v", m)
	}
	if !bytes.Equal(readAll(t, s, m.Key), png) {
		t.Fatal("stored bytes differ")
	}

	_, err = s.Fetch(context.Background(), srv.Client(), get(t, srv.URL+"/html-says-jpeg"), "photo.jpg")
	if !errors.Is(err, media.ErrTypeNotAllowed) {
		t.Fatalf("HTML served as image/jpeg: %v, want ErrTypeNotAllowed", err)
	}
	if len(b.Keys()) != 2 { // the PNG and its preview only
		t.Fatalf("keys %v", b.Keys())
	}
}

// An oversize Content-Length is refused before the body is read: the
// server sends the first bytes, then holds the rest until the test ends.
func TestFetchRefusesOversizeContentLengthEarly(t *testing.T) {
	const max = 1000
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(max+1))
		_, _ = w.Write([]byte("hello"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	b := newFake()
	s := newStore(t, b, media.Options{MaxBytes: max})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := s.Fetch(ctx, srv.Client(), get(t, srv.URL), "")
	if !errors.Is(err, media.ErrTooLarge) || !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("Fetch = %v, want ErrTooLarge", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("refusal took %v: the body was waited for", d)
	}
	if len(b.Keys()) != 0 {
		t.Fatalf("stored %v", b.Keys())
	}
}

// Without Content-Length (chunked), the limit applies while streaming.
func TestFetchChunkedOverLimit(t *testing.T) {
	const max = 50_000
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("a", 10_000))
		for range 10 {
			_, _ = w.Write(chunk)
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	s, dir := newLocalStore(t, media.Options{MaxBytes: max})
	if _, err := s.Fetch(context.Background(), srv.Client(), get(t, srv.URL), "a.txt"); !errors.Is(err, media.ErrTooLarge) {
		t.Fatalf("Fetch = %v, want ErrTooLarge", err)
	}
	if files := filesIn(t, dir); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
}

func TestFetchStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/gone":
			http.Error(w, "expired", http.StatusNotFound)
		default:
			http.Error(w, "oops", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	s := newStore(t, newFake(), media.Options{})
	_, err := s.Fetch(context.Background(), srv.Client(), get(t, srv.URL+"/gone?access_token=SECRET"), "")
	if !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("404: %v, want ErrNotFound", err)
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("error leaks the query: %v", err)
	}
	_, err = s.Fetch(context.Background(), srv.Client(), get(t, srv.URL+"/boom?access_token=SECRET"), "")
	if err == nil || errors.Is(err, core.ErrNotFound) || errors.Is(err, core.ErrInvalid) || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("500: %v", err)
	}
	// A transport error names the URL without its query, too.
	srv.Close()
	_, err = s.Fetch(context.Background(), nil, get(t, srv.URL+"/x?access_token=SECRET"), "")
	if err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("transport error: %v", err)
	}
}
