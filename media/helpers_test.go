package media_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kefuhq/kefu/adapters/media/local"
	"github.com/kefuhq/kefu/adapters/media/memory"
	"github.com/kefuhq/kefu/media"
)

// fakeBackend wraps a memory backend, counts Opens per key and fails Puts
// whose key has failPut as suffix.
type fakeBackend struct {
	*memory.Backend
	failPut string

	mu    sync.Mutex
	opens map[string]int
}

var errDiskFull = errors.New("no space left on device (fake)")

func newFake() *fakeBackend {
	return &fakeBackend{Backend: memory.New(), opens: map[string]int{}}
}

func (f *fakeBackend) Put(ctx context.Context, key string, r io.Reader) error {
	if f.failPut != "" && strings.HasSuffix(key, f.failPut) {
		return errDiskFull
	}
	return f.Backend.Put(ctx, key, r)
}

func (f *fakeBackend) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	f.opens[key]++
	f.mu.Unlock()
	return f.Backend.Open(ctx, key)
}

func (f *fakeBackend) openCount(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens[key]
}

func newStore(t testing.TB, b media.Backend, opt media.Options) *media.Store {
	t.Helper()
	s, err := media.New(b, opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newLocalStore returns a Store over a local backend and its folder.
func newLocalStore(t *testing.T, opt media.Options) (*media.Store, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return newStore(t, b, opt), dir
}

// filesIn lists the regular files under dir.
func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// testImage is w×h: the left half red, the right half blue.
func testImage(w, h int) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			c := color.RGBA{R: 220, G: 20, B: 20, A: 255}
			if x >= w/2 {
				c = color.RGBA{R: 20, G: 20, B: 220, A: 255}
			}
			m.SetRGBA(x, y, c)
		}
	}
	return m
}

func pngBytes(t testing.TB, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func jpegBytes(t testing.TB, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gifBytes(t testing.TB, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := gif.Encode(&buf, m, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withExif inserts an APP1 EXIF segment right after a JPEG's SOI marker,
// holding IFD0 with the Orientation tag and, as a stand-in for a GPS
// position, an ImageDescription of extra.
func withExif(jpg []byte, orientation uint16, extra string) []byte {
	var tiff bytes.Buffer
	le := binary.LittleEndian
	tiff.WriteString("II*\x00")
	_ = binary.Write(&tiff, le, uint32(8))      // IFD0 offset
	_ = binary.Write(&tiff, le, uint16(2))      // two entries
	_ = binary.Write(&tiff, le, uint16(0x0112)) // Orientation
	_ = binary.Write(&tiff, le, uint16(3))      // SHORT
	_ = binary.Write(&tiff, le, uint32(1))
	_ = binary.Write(&tiff, le, orientation)
	_ = binary.Write(&tiff, le, uint16(0))
	_ = binary.Write(&tiff, le, uint16(0x010E)) // ImageDescription
	_ = binary.Write(&tiff, le, uint16(2))      // ASCII
	_ = binary.Write(&tiff, le, uint32(len(extra)+1))
	_ = binary.Write(&tiff, le, uint32(8+2+2*12+4)) // value offset: after the IFD
	_ = binary.Write(&tiff, le, uint32(0))          // no next IFD
	tiff.WriteString(extra + "\x00")

	seg := append([]byte("Exif\x00\x00"), tiff.Bytes()...)
	var out bytes.Buffer
	out.Write(jpg[:2]) // SOI
	out.Write([]byte{0xFF, 0xE1})
	_ = binary.Write(&out, binary.BigEndian, uint16(len(seg)+2))
	out.Write(seg)
	out.Write(jpg[2:])
	return out.Bytes()
}

// pngHeaderOnly is a PNG that declares w×h but holds one tiny IDAT: what a
// decompression bomb looks like to DecodeConfig.
func pngHeaderOnly(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		_ = binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.WriteString(typ)
		b.Write(data)
		crc := crc32.NewIEEE()
		crc.Write([]byte(typ))
		crc.Write(data)
		_ = binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 2 // 8-bit RGB
	chunk("IHDR", ihdr)
	chunk("IDAT", []byte{0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01})
	chunk("IEND", nil)
	return b.Bytes()
}

// readAll opens key through s and returns its bytes.
func readAll(t *testing.T, s *media.Store, key string) []byte {
	t.Helper()
	rc, n, err := s.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("Open(%s): %v", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != n {
		t.Fatalf("Open(%s) size %d, read %d", key, n, len(data))
	}
	return data
}
