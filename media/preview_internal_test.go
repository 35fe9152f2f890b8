package media

import (
	"image"
	"image/color"
	"testing"
)

func TestFit(t *testing.T) {
	tests := []struct{ w, h, max, ww, wh int }{
		{1200, 800, 480, 480, 320},
		{800, 1200, 480, 320, 480},
		{480, 480, 480, 480, 480},
		{100, 50, 480, 100, 50},
		{100000, 1, 480, 480, 1},
		{1, 100000, 480, 1, 480},
		{1000, 999, 480, 480, 480},
	}
	for _, tt := range tests {
		if w, h := fit(tt.w, tt.h, tt.max); w != tt.ww || h != tt.wh {
			t.Errorf("fit(%d, %d, %d) = %d, %d; want %d, %d", tt.w, tt.h, tt.max, w, h, tt.ww, tt.wh)
		}
	}
}

// TestOrientImage checks each EXIF orientation against where the corner
// pixels of a 3×2 image must end up.
func TestOrientImage(t *testing.T) {
	// Source, by pixel value: a b c / d e f.
	src := image.NewRGBA(image.Rect(0, 0, 3, 2))
	for i, v := range []uint8{'a', 'b', 'c', 'd', 'e', 'f'} {
		src.SetRGBA(i%3, i/3, color.RGBA{R: v, A: 255})
	}
	want := map[int][]string{
		1: {"abc", "def"},
		2: {"cba", "fed"},
		3: {"fed", "cba"},
		4: {"def", "abc"},
		5: {"ad", "be", "cf"},
		6: {"da", "eb", "fc"},
		7: {"fc", "eb", "da"},
		8: {"cf", "be", "ad"},
	}
	for o, rows := range want {
		got := orientImage(src, o)
		b := got.Bounds()
		var lines []string
		for y := 0; y < b.Dy(); y++ {
			var line []byte
			for x := 0; x < b.Dx(); x++ {
				line = append(line, got.RGBAAt(x, y).R)
			}
			lines = append(lines, string(line))
		}
		if len(lines) != len(rows) {
			t.Errorf("orientation %d: %v, want %v", o, lines, rows)
			continue
		}
		for i := range rows {
			if lines[i] != rows[i] {
				t.Errorf("orientation %d: %v, want %v", o, lines, rows)
				break
			}
		}
	}
}

func TestJPEGOrientationMalformed(t *testing.T) {
	for _, b := range [][]byte{
		nil, {0xFF}, {0xFF, 0xD8}, {0xFF, 0xD8, 0xFF, 0xE1, 0x00},
		{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x01},                                                                 // length below 2
		{0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF, 'E'},                                                            // length past the end
		append([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x10}, "Exif\x00\x00II*\x00\xff\xff\xff\xff"...),         // IFD offset past the end
		append([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x12}, "Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"...), // 65535 entries, none there
	} {
		if o := jpegOrientation(b); o != 1 {
			t.Errorf("jpegOrientation(%x) = %d, want 1", b, o)
		}
	}
}

// FuzzJPEGOrientation: the EXIF parser reads outside input; it must never
// panic and always answer 1–8.
func FuzzJPEGOrientation(f *testing.F) {
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xD9})
	f.Add(append([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x24}, "Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00"...))
	f.Fuzz(func(t *testing.T, b []byte) {
		if o := jpegOrientation(b); o < 1 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
	})
}

// TestDecodeMemoryHeaders: the headers that make decoding take more
// memory are recognised, and nothing else is.
func TestDecodeMemoryHeaders(t *testing.T) {
	ihdr := func(interlace byte) []byte {
		b := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x06\x00\x00")
		return append(b, interlace, 0, 0, 0, 0)
	}
	if !pngInterlaced(ihdr(1)) || pngInterlaced(ihdr(0)) || pngInterlaced(ihdr(1)[:20]) {
		t.Error("pngInterlaced")
	}
	segment := func(marker byte, n int) []byte {
		return append([]byte{0xFF, marker, 0, byte(n + 2)}, make([]byte, n)...)
	}
	jpeg := func(segs ...[]byte) []byte {
		b := []byte{0xFF, 0xD8}
		for _, s := range segs {
			b = append(b, s...)
		}
		return b
	}
	for _, tt := range []struct {
		name string
		head []byte
		want bool
	}{
		{"baseline", jpeg(segment(0xE0, 14), segment(0xDB, 65), segment(0xC0, 15), segment(0xDA, 10)), false},
		{"progressive after APP1", jpeg(segment(0xE1, 100), segment(0xC2, 15), segment(0xDA, 10)), true},
		{"progressive after the scan", jpeg(segment(0xC0, 15), segment(0xDA, 10), segment(0xC2, 15)), false},
		{"cut short", jpeg(segment(0xE1, 100))[:50], false},
	} {
		if got := jpegProgressive(tt.head); got != tt.want {
			t.Errorf("jpegProgressive(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
