package media_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"testing"

	"github.com/kefuhq/kefu/media"
)

// photo is a w×h image with some texture, like a photograph.
func photo(w, h int) *image.YCbCr {
	m := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.Y[m.YOffset(x, y)] = uint8((x*7 + y*13) ^ (x * y))
		}
	}
	for i := range m.Cb {
		m.Cb[i], m.Cr[i] = uint8(i), uint8(i>>3)
	}
	return m
}

// BenchmarkSaveJPEG measures Save of a camera photo: sniff, store, decode,
// scale to 480 px and encode the preview.
func BenchmarkSaveJPEG(b *testing.B) {
	for _, size := range []struct{ w, h int }{{1280, 960}, {4032, 3024}} {
		b.Run(fmt.Sprintf("%dx%d", size.w, size.h), func(b *testing.B) {
			data := jpegBytes(b, photo(size.w, size.h))
			s := newStore(b, newFake(), media.Options{})
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for b.Loop() {
				m, err := s.Save(context.Background(), bytes.NewReader(data), "photo.jpg")
				if err != nil || m.Preview == "" {
					b.Fatal(m, err)
				}
			}
		})
	}
}
