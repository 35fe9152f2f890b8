package bench

import (
	"math"
	"math/bits"
	"time"
)

// Hist is a log-bucketed latency histogram (HDR-like): values are
// microseconds; below 32 µs every value has its own bucket, above it each
// power of two is split into 16 buckets, so a quantile is within ~6 % of
// the true value. Record does not allocate. A Hist is owned by one
// goroutine; Merge combines them at the end of a run.
type Hist struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64
	min    uint64
	max    uint64
}

const histBuckets = 64 * 16

func bucketOf(v uint64) int {
	if v < 32 {
		return int(v)
	}
	e := bits.Len64(v) - 5
	return e*16 + int(v>>uint(e))
}

// bucketLow is the smallest value of bucket i; bucketLow(i+1)-1 its largest.
func bucketLow(i int) uint64 {
	if i < 32 {
		return uint64(i)
	}
	e := i/16 - 1
	m := uint64(i%16 + 16)
	return m << uint(e)
}

// Record adds one latency.
func (h *Hist) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	v := uint64(us)
	h.counts[bucketOf(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// Merge adds o's values to h.
func (h *Hist) Merge(o *Hist) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is how many values were recorded.
func (h *Hist) Count() uint64 { return h.n }

// Max is the largest value recorded.
func (h *Hist) Max() time.Duration { return time.Duration(h.max) * time.Microsecond }

// Mean is the mean of the values recorded.
func (h *Hist) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum/h.n) * time.Microsecond
}

// Quantile returns the value at quantile q (0..1): the largest value of the
// bucket holding it, never more than the maximum recorded.
func (h *Hist) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return time.Duration(h.min) * time.Microsecond
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := bucketLow(i+1) - 1
			if v > h.max {
				v = h.max
			}
			if v < h.min {
				v = h.min
			}
			return time.Duration(v) * time.Microsecond
		}
	}
	return h.Max()
}

// Latency is a histogram's summary, in milliseconds.
type Latency struct {
	Count  uint64  `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P95MS  float64 `json:"p95_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Summary summarises the histogram.
func (h *Hist) Summary() Latency {
	return Latency{Count: h.n, MeanMS: ms(h.Mean()), P50MS: ms(h.Quantile(.5)), P95MS: ms(h.Quantile(.95)),
		P99MS: ms(h.Quantile(.99)), MaxMS: ms(h.Max())}
}
