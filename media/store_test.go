package media_test

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"image"
	"image/jpeg"
	"os"
	"strings"
	"testing"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// zipWith returns a zip archive holding the named (empty-ish) files.
func zipWith(t *testing.T, names ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte("<x/>"))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mp4Box returns an ftyp box with the given major brand.
func ftyp(brand string) []byte {
	b := []byte{0, 0, 0, 0x18}
	b = append(b, "ftyp"+brand+"\x00\x00\x02\x00"+brand+"isom"...)
	return append(b, make([]byte, 64)...)
}

func TestSniffing(t *testing.T) {
	html := []byte("<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>")
	svg := []byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="4"/></svg>`)
	mp3 := append([]byte{0xFF, 0xFB, 0x90, 0x64}, make([]byte, 413)...) // MPEG-1 layer III frame, no ID3 tag
	mp3 = append(mp3, append([]byte{0xFF, 0xFB, 0x90, 0x64}, make([]byte, 413)...)...)
	ogg := append([]byte("OggS\x00\x02"), make([]byte, 20)...) // granule, serial, sequence, CRC
	ogg = append(ogg, 1, 19)
	ogg = append(ogg, "OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"...)

	tests := []struct {
		name     string
		data     []byte
		filename string
		allowed  []string
		wantType string // "" = refused with ErrTypeNotAllowed
		wantExt  string
	}{
		{"png named exe", pngBytes(t, testImage(8, 8)), "evil.exe", nil, "image/png", ".png"},
		{"jpeg named txt", jpegBytes(t, testImage(8, 8)), "notes.txt", nil, "image/jpeg", ".jpg"},
		{"gif", gifBytes(t, testImage(8, 8)), "a.gif", nil, "image/gif", ".gif"},
		{"html named jpg", html, "photo.jpg", nil, "", ""},
		{"html allowed by name", html, "photo.jpg", []string{"text/html"}, "text/html", ".html"},
		{"html not matched by text/*", html, "page.html", []string{"text/*"}, "", ""},
		{"svg named png", svg, "logo.png", nil, "", ""},
		{"svg not matched by image/*", svg, "logo.svg", []string{"image/*"}, "", ""},
		{"xhtml in xml not matched by wildcards", []byte(`<?xml version="1.0"?><x:html xmlns:x="http://www.w3.org/1999/xhtml"><x:script>alert(1)</x:script></x:html>`), "a.xml", []string{"text/*", "application/*"}, "", ""},
		{"svg allowed by name", svg, "logo.svg", []string{"image/svg+xml"}, "image/svg+xml", ".svg"},
		{"png matched by image/*", pngBytes(t, testImage(8, 8)), "x", []string{"image/*"}, "image/png", ".png"},
		{"plain text", []byte("hello, world\nsecond line\n"), "a.txt", nil, "text/plain", ".txt"},
		{"json is not text", []byte(`{"errcode":40007,"errmsg":"invalid media_id"}`), "voice.amr", nil, "", ""},
		{"pdf", []byte("%PDF-1.7\n1 0 obj\n<<>>\nendobj\n"), "invoice.pdf", nil, "application/pdf", ".pdf"},
		{"zip", zipWith(t, "a.txt", "b.txt"), "files.zip", nil, "application/zip", ".zip"},
		{"docx", zipWith(t, "[Content_Types].xml", "word/document.xml"), "cv.zip", nil,
			"application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx"},
		{"xlsx", zipWith(t, "[Content_Types].xml", "xl/workbook.xml"), "sheet", nil,
			"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx"},
		{"jar is not zip", zipWith(t, "META-INF/MANIFEST.MF"), "tool.zip", nil, "", ""},
		{"amr", append([]byte("#!AMR\n"), make([]byte, 64)...), "voice", nil, "audio/amr", ".amr"},
		{"mp3 without id3", mp3, "song", nil, "audio/mpeg", ".mp3"},
		{"ogg opus", ogg, "voice.ogg", nil, "audio/ogg", ".ogg"},
		{"mp4", ftyp("mp42"), "clip", nil, "video/mp4", ".mp4"},
		{"m4a", ftyp("M4A "), "memo", nil, "audio/mp4", ".m4a"},
		{"mov", ftyp("qt  "), "IMG_0001.MOV", nil, "video/quicktime", ".mov"},
		{"elf", append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 64)...), "photo.jpg", nil, "", ""},
		{"windows exe", append([]byte("MZ\x90\x00\x03\x00\x00\x00"), make([]byte, 64)...), "photo.png", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFake()
			s := newStore(t, b, media.Options{Allowed: tt.allowed})
			m, err := s.Save(context.Background(), bytes.NewReader(tt.data), tt.filename)
			if tt.wantType == "" {
				if !errors.Is(err, media.ErrTypeNotAllowed) || !errors.Is(err, core.ErrInvalid) {
					t.Fatalf("Save = %+v, %v; want ErrTypeNotAllowed wrapping ErrInvalid", m, err)
				}
				if len(b.Keys()) != 0 {
					t.Fatalf("refused file left %v", b.Keys())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Type != tt.wantType || !strings.HasSuffix(m.Key, tt.wantExt) {
				t.Fatalf("saved as %s under %s, want %s with %s", m.Type, m.Key, tt.wantType, tt.wantExt)
			}
			wantName := tt.filename
			if strings.HasSuffix(wantName, ".exe") { // a name that would run gets the real extension
				wantName += tt.wantExt
			}
			if m.Name != wantName || m.Size != int64(len(tt.data)) {
				t.Fatalf("name %q size %d, want %q %d", m.Name, m.Size, wantName, len(tt.data))
			}
			if media.TypeOf(m.Key) != m.Type && !strings.HasPrefix(media.TypeOf(m.Key), "application/octet-stream") {
				t.Fatalf("TypeOf(%s) = %s, want %s", m.Key, media.TypeOf(m.Key), m.Type)
			}
			if got := readAll(t, s, m.Key); !bytes.Equal(got, tt.data) {
				t.Fatal("stored bytes differ")
			}
		})
	}
}

func TestTypeNotAllowedNamesType(t *testing.T) {
	s := newStore(t, newFake(), media.Options{})
	_, err := s.Save(context.Background(), strings.NewReader("<html><body>hi</body></html>"), "x.jpg")
	if err == nil || !strings.Contains(err.Error(), "text/html") {
		t.Fatalf("error %v does not name text/html", err)
	}
}

func TestSizeLimit(t *testing.T) {
	for _, max := range []int64{100, 4096, 4097, 100_000} { // below, at and past the sniffed head
		for _, tt := range []struct {
			size int64
			ok   bool
		}{{max - 1, true}, {max, true}, {max + 1, false}, {3 * max, false}} {
			s, dir := newLocalStore(t, media.Options{MaxBytes: max})
			body := strings.Repeat("a", int(tt.size))
			m, err := s.Save(context.Background(), strings.NewReader(body), "a.txt")
			if tt.ok {
				if err != nil || m.Size != tt.size {
					t.Fatalf("max %d, size %d: %+v, %v", max, tt.size, m, err)
				}
				continue
			}
			if !errors.Is(err, media.ErrTooLarge) || !errors.Is(err, core.ErrInvalid) {
				t.Fatalf("max %d, size %d: %v, want ErrTooLarge wrapping ErrInvalid", max, tt.size, err)
			}
			if files := filesIn(t, dir); len(files) != 0 {
				t.Fatalf("max %d, size %d: files left %v", max, tt.size, files)
			}
		}
	}
}

// A body much larger than the limit is never read far past it.
func TestSizeLimitStopsReading(t *testing.T) {
	s := newStore(t, newFake(), media.Options{MaxBytes: 10_000})
	r := &countingReader{r: strings.NewReader(strings.Repeat("a", 10<<20))}
	if _, err := s.Save(context.Background(), r, "big.txt"); !errors.Is(err, media.ErrTooLarge) {
		t.Fatal(err)
	}
	if r.n > 10_000+64<<10 {
		t.Fatalf("read %d bytes of a body over a 10,000-byte limit", r.n)
	}
}

type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestEmptyRefused(t *testing.T) {
	b := newFake()
	s := newStore(t, b, media.Options{})
	if _, err := s.Save(context.Background(), strings.NewReader(""), "empty.txt"); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("Save(empty) = %v, want ErrInvalid", err)
	}
	if len(b.Keys()) != 0 {
		t.Fatal("empty file stored")
	}
}

func TestReadErrorStoresNothing(t *testing.T) {
	s, dir := newLocalStore(t, media.Options{})
	r := &failAfter{data: []byte(strings.Repeat("text ", 4000))}
	if _, err := s.Save(context.Background(), r, "a.txt"); !errors.Is(err, errCut) {
		t.Fatalf("Save = %v, want the reader's error", err)
	}
	if files := filesIn(t, dir); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
}

var errCut = errors.New("client went away")

type failAfter struct{ data []byte }

func (f *failAfter) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, errCut
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestKeys(t *testing.T) {
	s := newStore(t, newFake(), media.Options{})
	seen := map[string]bool{}
	for range 100 {
		m, err := s.Save(context.Background(), strings.NewReader("same content"), "a.txt")
		if err != nil {
			t.Fatal(err)
		}
		if seen[m.Key] {
			t.Fatalf("key %s given twice", m.Key)
		}
		seen[m.Key] = true
		id, ext, _ := strings.Cut(m.Key, ".")
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" || ext != "txt" {
			t.Fatalf("key %q: want 32 hex digits (128 bits) and .txt", m.Key)
		}
		if err := media.CheckKey(m.Key); err != nil {
			t.Fatal(err)
		}
	}
}

var badKeys = []string{
	"", "../x", "../../etc/passwd", "/etc/passwd", "/abs/path.png", "C:\\x.png",
	"0123456789abcdef0123456789abcdef", // no extension
	"0123456789abcdef0123456789abcdef.", "0123456789abcdef0123456789abcdef.PNG",
	"0123456789ABCDEF0123456789abcdef.png", "0123456789abcdef0123456789abcde.png",
	"0123456789abcdef0123456789abcdef0.png", "0123456789abcdef0123456789abcdeg.png",
	"0123456789abcdef0123456789abcdef.png/../x", "0123456789abcdef0123456789abcdef/x.png",
	"../0123456789abcdef0123456789abcd.png", "0123456789abcdef0123456789abcdef.toolongext",
	"0123456789abcdef0123456789abcdef.p-g", "0123456789abcdef0123456789abcdef.png ",
	"0123456789abcdef0123456789abcdef.png\x00", "0123456789abcdef0123456789abcdef..png",
	"0123456789abcdef0123456789abcdef.preview.png", "0123456789abcdef0123456789abcdef.a.b",
	"%2e%2e%2fetc%2fpasswd", "0123456789abcdef0123456789abcdef.pn\u0067\u0301",
}

func TestKeyValidation(t *testing.T) {
	b := newFake()
	s := newStore(t, b, media.Options{})
	ctx := context.Background()
	for _, key := range badKeys {
		if err := media.CheckKey(key); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("CheckKey(%q) = %v", key, err)
		}
		if _, _, err := s.Open(ctx, key); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("Open(%q) = %v", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("Delete(%q) = %v", key, err)
		}
		if _, _, err := s.OpenPreview(ctx, core.Media{Key: key}); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("OpenPreview(%q) = %v", key, err)
		}
		if got := media.TypeOf(key); got != "application/octet-stream" {
			t.Errorf("TypeOf(%q) = %s", key, got)
		}
	}
	for key := range b.opens {
		t.Errorf("a bad key reached the backend: %q", key)
	}
	good := []string{"0123456789abcdef0123456789abcdef.png", "0123456789abcdef0123456789abcdef.preview.jpg", "0123456789abcdef0123456789abcdef.webp"}
	for _, key := range good {
		if err := media.CheckKey(key); err != nil {
			t.Errorf("CheckKey(%q) = %v", key, err)
		}
		if err := media.CheckBackendKey(key); err != nil {
			t.Errorf("CheckBackendKey(%q) = %v", key, err)
		}
		if _, _, err := s.Open(ctx, key); !errors.Is(err, core.ErrNotFound) {
			t.Errorf("Open(%q) = %v, want ErrNotFound", key, err)
		}
	}
	// A preview key names a preview, not an object to delete.
	if err := s.Delete(ctx, good[1]); !errors.Is(err, core.ErrInvalid) {
		t.Errorf("Delete(preview key) = %v", err)
	}
}

func TestDeleteRemovesPreview(t *testing.T) {
	s, dir := newLocalStore(t, media.Options{})
	m, err := s.Save(context.Background(), bytes.NewReader(pngBytes(t, testImage(40, 30))), "a.png")
	if err != nil {
		t.Fatal(err)
	}
	if m.Preview == "" || len(filesIn(t, dir)) != 2 {
		t.Fatalf("want an object and a preview: %+v %v", m, filesIn(t, dir))
	}
	if err := s.Delete(context.Background(), m.Key); err != nil {
		t.Fatal(err)
	}
	if files := filesIn(t, dir); len(files) != 0 {
		t.Fatalf("files left after Delete: %v", files)
	}
	if err := s.Delete(context.Background(), m.Key); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	if _, _, err := s.OpenPreview(context.Background(), m); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("OpenPreview after Delete = %v, want ErrNotFound", err)
	}
}

func TestOptions(t *testing.T) {
	_, err := media.New(newFake(), media.Options{MaxBytes: -1, PreviewMax: -2, Allowed: []string{"image", "*/*", "image/png", "text/p*"}})
	if err == nil {
		t.Fatal("New accepted bad options")
	}
	for _, want := range []string{"max bytes -1", "preview max -2", `"image"`, `"*/*"`, `"text/p*"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if strings.Contains(err.Error(), `"image/png"`) {
		t.Errorf("error %q blames a good pattern", err)
	}
	if _, err := media.New(nil, media.Options{}); err == nil {
		t.Error("New(nil backend) succeeded")
	}
	s := newStore(t, newFake(), media.Options{})
	if s.MaxBytes() != 20<<20 {
		t.Errorf("default MaxBytes = %d", s.MaxBytes())
	}
}

func TestSanitizeName(t *testing.T) {
	long := strings.Repeat("长", 200) + ".pdf" // 600 bytes of stem
	tests := []struct{ in, want string }{
		{"photo.jpg", "photo.jpg"},
		{"../../etc/passwd", "passwd"},
		{`C:\fakepath\invoice.pdf`, "invoice.pdf"},
		{"/abs/dir/", ""},
		{"..", ""},
		{".", ""},
		{"  spaced  .txt ", "spaced  .txt"},
		{"a\x00b\x07c\r\n.txt", "abc  .txt"},
		{"photo\u202egnp.exe", "photognp.exe"},
		{"zero\u200bwidth.png", "zerowidth.png"},
		{"bad\xff\xfeutf8.txt", "badutf8.txt"},
		{"报告.docx", "报告.docx"},
		{"tab\there.txt", "tab here.txt"},
	}
	for _, tt := range tests {
		if got := media.SanitizeName(tt.in); got != tt.want {
			t.Errorf("SanitizeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	got := media.SanitizeName(long)
	if len(got) > 255 || !strings.HasSuffix(got, ".pdf") || !strings.HasPrefix(got, "长") {
		t.Errorf("long name → %d bytes %q", len(got), got)
	}
}

// An image the backend cannot take the preview of leaves nothing: the
// object saved first is removed again.
func TestPreviewFailureStoresNothing(t *testing.T) {
	b := newFake()
	b.failPut = ".preview.jpg"
	s := newStore(t, b, media.Options{})
	_, err := s.Save(context.Background(), bytes.NewReader(pngBytes(t, testImage(20, 20))), "a.png")
	if !errors.Is(err, errDiskFull) {
		t.Fatalf("Save = %v, want the backend's error", err)
	}
	if keys := b.Keys(); len(keys) != 0 {
		t.Fatalf("left behind: %v", keys)
	}
}

func TestCancelledSaveStoresNothing(t *testing.T) {
	s, dir := newLocalStore(t, media.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Save(ctx, bytes.NewReader(jpegBytes(t, testImage(50, 50))), "a.jpg"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Save = %v, want context.Canceled", err)
	}
	if files := filesIn(t, dir); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
}

func TestOpenIsSeekable(t *testing.T) {
	s, _ := newLocalStore(t, media.Options{})
	m, err := s.Save(context.Background(), strings.NewReader("0123456789"), "a.txt")
	if err != nil {
		t.Fatal(err)
	}
	rc, _, err := s.Open(context.Background(), m.Key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, ok := rc.(interface {
		Seek(int64, int) (int64, error)
	}); !ok {
		t.Fatal("local reader is not an io.Seeker (http.ServeContent needs one for ranges)")
	}
}

// previewOf opens m's preview and decodes it as JPEG, checking its bytes
// are JPEG.
func previewOf(t *testing.T, s *media.Store, m core.Media) (image.Image, []byte) {
	t.Helper()
	if m.Preview == "" {
		t.Fatalf("%+v has no preview", m)
	}
	rc, _, err := s.OpenPreview(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	if media.TypeOf(m.Preview) != "image/jpeg" {
		t.Fatalf("TypeOf(preview) = %s", media.TypeOf(m.Preview))
	}
	img, err := jpeg.Decode(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("preview is not a JPEG: %v", err)
	}
	return img, buf.Bytes()
}

func TestPreviews(t *testing.T) {
	webp, err := os.ReadFile("testdata/large.lossy.webp") // 600×400, from golang.org/x/image's test data
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		data       []byte
		previewMax int
		wantW      int
		wantH      int
	}{
		{"png landscape", pngBytes(t, testImage(960, 640)), 0, 480, 320},
		{"png portrait", pngBytes(t, testImage(200, 600)), 0, 160, 480},
		{"jpeg", jpegBytes(t, testImage(1000, 500)), 0, 480, 240},
		{"small kept small", pngBytes(t, testImage(100, 50)), 0, 100, 50},
		{"exactly the max", pngBytes(t, testImage(480, 10)), 0, 480, 10},
		{"thin line", pngBytes(t, testImage(2000, 1)), 0, 480, 1},
		{"gif", gifBytes(t, testImage(600, 600)), 0, 480, 480},
		{"webp", webp, 0, 480, 320},
		{"custom max", pngBytes(t, testImage(1000, 500)), 100, 100, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, newFake(), media.Options{PreviewMax: tt.previewMax})
			m, err := s.Save(context.Background(), bytes.NewReader(tt.data), "img")
			if err != nil {
				t.Fatal(err)
			}
			if want := m.Key[:32] + ".preview.jpg"; m.Preview != want {
				t.Fatalf("preview key %q, want %q", m.Preview, want)
			}
			img, _ := previewOf(t, s, m)
			if b := img.Bounds(); b.Dx() != tt.wantW || b.Dy() != tt.wantH {
				t.Fatalf("preview %dx%d, want %dx%d", b.Dx(), b.Dy(), tt.wantW, tt.wantH)
			}
			// The preview can also be opened by its key (TypeOf says JPEG).
			if got := readAll(t, s, m.Preview); len(got) == 0 {
				t.Fatal("empty preview")
			}
		})
	}
}

func TestPreviewOrientationAndMetadata(t *testing.T) {
	const secret = "GPS 48.8584N 2.2945E"
	// Stored 80×40, left half red; orientation 6 means "turn 90° clockwise
	// to view", so the preview is 40×80 with red on top.
	jpg := withExif(jpegBytes(t, testImage(80, 40)), 6, secret)
	s := newStore(t, newFake(), media.Options{})
	m, err := s.Save(context.Background(), bytes.NewReader(jpg), "IMG_0001.JPG")
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "image/jpeg" {
		t.Fatalf("type %s", m.Type)
	}
	img, raw := previewOf(t, s, m)
	if b := img.Bounds(); b.Dx() != 40 || b.Dy() != 80 {
		t.Fatalf("preview %dx%d, want 40x80 (turned upright)", b.Dx(), b.Dy())
	}
	isRed := func(x, y int) bool {
		r, _, b, _ := img.At(x, y).RGBA()
		return r > 2*b
	}
	if !isRed(20, 10) || isRed(20, 70) {
		t.Fatal("preview turned the wrong way: red half should be on top")
	}
	if bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte("Exif")) {
		t.Fatal("preview kept EXIF metadata")
	}
	// The original is kept byte for byte.
	if !bytes.Equal(readAll(t, s, m.Key), jpg) {
		t.Fatal("original changed")
	}
}

func TestPreviewTransparentOnWhite(t *testing.T) {
	s := newStore(t, newFake(), media.Options{})
	m, err := s.Save(context.Background(), bytes.NewReader(pngBytes(t, image.NewNRGBA(image.Rect(0, 0, 20, 20)))), "clear.png")
	if err != nil {
		t.Fatal(err)
	}
	img, _ := previewOf(t, s, m)
	if r, g, b, _ := img.At(10, 10).RGBA(); r < 0xf000 || g < 0xf000 || b < 0xf000 {
		t.Fatalf("transparent pixel rendered as %x %x %x, want white", r, g, b)
	}
}

// A PNG declaring a 10-gigapixel canvas is saved, without a preview, and
// is never decoded: only the one read of its header happens.
func TestDecompressionBomb(t *testing.T) {
	for _, tt := range []struct {
		name      string
		data      []byte
		maxPixels int64
	}{
		{"10 gigapixels declared", pngHeaderOnly(100_000, 100_000), 0},
		{"just over the limit", pngHeaderOnly(8000, 5001), 0},
		{"over a custom limit", pngBytes(t, testImage(100, 100)), 9_999},
		// 16 bits a channel: 8 bytes a pixel to decode, so it counts double.
		{"16-bit over half the limit", pngBytes(t, image.NewRGBA64(image.Rect(0, 0, 100, 60))), 10_000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newFake()
			s := newStore(t, b, media.Options{MaxPixels: tt.maxPixels})
			m, err := s.Save(context.Background(), bytes.NewReader(tt.data), "bomb.png")
			if err != nil {
				t.Fatal(err)
			}
			if m.Type != "image/png" || m.Preview != "" {
				t.Fatalf("saved %+v; want a PNG without preview", m)
			}
			if n := b.openCount(m.Key); n != 1 {
				t.Fatalf("object opened %d times; want 1 (header only, no decode)", n)
			}
			if _, _, err := s.OpenPreview(context.Background(), m); !errors.Is(err, core.ErrNotFound) {
				t.Fatalf("OpenPreview = %v, want ErrNotFound", err)
			}
		})
	}
}

// An 8-bit image of the same size as the 16-bit one refused above is
// within the limit: the limit is on decoding memory, not on pixels alone.
func TestPreviewLimitCountsBytes(t *testing.T) {
	s := newStore(t, newFake(), media.Options{MaxPixels: 10_000})
	for _, tt := range []struct {
		name string
		img  image.Image
		want bool
	}{
		{"8-bit", image.NewRGBA(image.Rect(0, 0, 100, 60)), true},
		{"16-bit", image.NewRGBA64(image.Rect(0, 0, 100, 60)), false},
		{"16-bit, half the pixels", image.NewRGBA64(image.Rect(0, 0, 100, 50)), true},
	} {
		m, err := s.Save(context.Background(), bytes.NewReader(pngBytes(t, tt.img)), "a.png")
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Preview != ""; got != tt.want {
			t.Errorf("%s: preview %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCorruptImageSavedWithoutPreview(t *testing.T) {
	good := pngBytes(t, testImage(50, 50))
	corrupt := append(append([]byte{}, good[:60]...), bytes.Repeat([]byte{0xAB}, 500)...)
	s := newStore(t, newFake(), media.Options{})
	m, err := s.Save(context.Background(), bytes.NewReader(corrupt), "broken.png")
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "image/png" || m.Preview != "" {
		t.Fatalf("%+v; want a PNG without preview", m)
	}
}

func TestOpenPreviewChecksKeys(t *testing.T) {
	s := newStore(t, newFake(), media.Options{})
	m, err := s.Save(context.Background(), bytes.NewReader(pngBytes(t, testImage(10, 10))), "a.png")
	if err != nil {
		t.Fatal(err)
	}
	other := m
	other.Preview = "ffffffffffffffffffffffffffffffff.preview.jpg"
	if _, _, err := s.OpenPreview(context.Background(), other); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("OpenPreview with another object's preview key = %v", err)
	}
	noField := m
	noField.Preview = "" // a store that does not keep the field
	rc, _, err := s.OpenPreview(context.Background(), noField)
	if err != nil {
		t.Fatalf("OpenPreview without the Preview field = %v", err)
	}
	rc.Close()
}

// TestRunnableNamesGetTheRealExtension: a file whose name would make it
// run when opened (HTML, script, an installer) but whose content is text
// or data is saved under its name with the real type's extension added;
// ordinary names stay as they are.
func TestRunnableNamesGetTheRealExtension(t *testing.T) {
	s := newStore(t, newFake(), media.Options{})
	for _, tt := range []struct {
		name, content, want string
	}{
		{"invoice.html", "Invoice\n\n<html><script>alert(1)</script>", "invoice.html.txt"},
		{"invoice.pdf.js", `var s=new ActiveXObject("WScript.Shell");s.Run("calc.exe")`, "invoice.pdf.js.txt"},
		{"setup.EXE", "just text", "setup.EXE.txt"},
		{"notes.md", "# notes", "notes.md"},
		{"readme.txt", "hello", "readme.txt"},
		{"no extension", "hello", "no extension"},
	} {
		m, err := s.Save(context.Background(), strings.NewReader(tt.content), tt.name)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if m.Name != tt.want {
			t.Errorf("Save(%q) named it %q, want %q", tt.name, m.Name, tt.want)
		}
	}
	m, err := s.Save(context.Background(), bytes.NewReader(jpegBytes(t, testImage(4, 4))), "photo.jpeg")
	if err != nil || m.Name != "photo.jpeg" {
		t.Errorf("a JPEG named photo.jpeg: %q, %v", m.Name, err)
	}
	if got := media.FileName("renamed.hta", m.Key, m.Type); got != "renamed.hta.jpg" {
		t.Errorf("FileName(renamed.hta) for a JPEG = %q, want renamed.hta.jpg", got)
	}
}
