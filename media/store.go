package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/kefuhq/kefu/core"
)

// Defaults of Options.
const (
	DefaultMaxBytes    = 20 << 20   // media.max_bytes
	DefaultPreviewMax  = 480        // px, longest side
	DefaultMaxPixels   = 40_000_000 // 40 megapixels
	DefaultPreviewJobs = 2
)

// Options is the media policy. The zero value means every default.
type Options struct {
	// MaxBytes is the largest file accepted, in bytes; default 20 MiB
	// (config media.max_bytes).
	MaxBytes int64
	// Allowed lists the types Save accepts, each a MIME type
	// ("application/pdf") or a wildcard over one top-level type
	// ("image/*"). A wildcard never matches a type a browser could run
	// script from (HTML, JavaScript, any XML type such as SVG or XHTML):
	// those are allowed only by exact name. Default: DefaultAllowed().
	Allowed []string
	// PreviewMax is the longest side of a preview, in pixels; default 480.
	PreviewMax int
	// MaxPixels is the largest image (width × height, as the file declares
	// it) that is decoded for a preview, counted at 8-bit RGBA; a larger
	// one is saved without a preview. Images that take more memory a pixel
	// to decode (16 bits a channel, interlaced PNG, progressive JPEG) count
	// for more (see decodeBytes). Default 40 megapixels, about 160 MB while
	// decoding.
	MaxPixels int64
	// PreviewJobs bounds how many images decode at once (memory); default 2.
	PreviewJobs int
}

// withDefaults returns o with its zero fields set to the defaults, and
// every problem found.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("max bytes %d: must not be negative", o.MaxBytes))
	}
	if o.PreviewMax < 0 {
		errs = append(errs, fmt.Errorf("preview max %d: must not be negative", o.PreviewMax))
	}
	if o.MaxPixels < 0 {
		errs = append(errs, fmt.Errorf("max pixels %d: must not be negative", o.MaxPixels))
	}
	if o.PreviewJobs < 0 {
		errs = append(errs, fmt.Errorf("preview jobs %d: must not be negative", o.PreviewJobs))
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	o.MaxBytes = min(o.MaxBytes, math.MaxInt64-1) // the limit reader reads one byte past it
	if len(o.Allowed) == 0 {
		o.Allowed = DefaultAllowed()
	}
	if o.PreviewMax == 0 {
		o.PreviewMax = DefaultPreviewMax
	}
	if o.MaxPixels == 0 {
		o.MaxPixels = DefaultMaxPixels
	}
	if o.PreviewJobs == 0 {
		o.PreviewJobs = DefaultPreviewJobs
	}
	return o, errors.Join(errs...)
}

// Store applies kefu's media policy over a Backend. It is safe for
// concurrent use. It holds nothing to close; whoever created the Backend
// closes it.
//
// ctx, in every method, bounds the call: when it ends, the call returns its
// error, and a Save or Fetch that has not returned stores nothing.
type Store struct {
	b        Backend
	opt      Options
	allow    allowList
	decoding chan struct{} // semaphore: images being decoded
}

// New returns a Store over b. It fails, naming every problem, when opt
// holds a negative number or a malformed Allowed pattern.
func New(b Backend, opt Options) (*Store, error) {
	if b == nil {
		return nil, errors.New("media: nil backend")
	}
	opt, err := opt.withDefaults()
	allow, aerr := parseAllowed(opt.Allowed)
	if err = errors.Join(err, aerr); err != nil {
		return nil, fmt.Errorf("media: %w", err)
	}
	return &Store{b: b, opt: opt, allow: allow, decoding: make(chan struct{}, opt.PreviewJobs)}, nil
}

// MaxBytes returns the size limit in force, so that HTTP handlers can bound
// a request body (http.MaxBytesReader) before handing it to Save.
func (s *Store) MaxBytes() int64 { return s.opt.MaxBytes }

// Save stores the file r yields and returns its reference: a fresh random
// Key with the extension of the sniffed type, name sanitized
// (SanitizeName), the sniffed MIME type (without parameters), the size, and
// for images the key of a preview (see preview.go for what that is and
// when there is none).
//
// The type comes from the content alone. Save refuses, storing nothing:
// an empty body (core.ErrInvalid), a type not allowed (ErrTypeNotAllowed,
// naming the type), a body over MaxBytes (ErrTooLarge, found while
// streaming: the body is never held in memory). A read error from r, a
// backend error or the end of ctx also leave nothing stored.
func (s *Store) Save(ctx context.Context, r io.Reader, name string) (core.Media, error) {
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(r, head)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
	case err != nil:
		return core.Media{}, fmt.Errorf("media: read: %w", err)
	}
	head = head[:n]
	if n == 0 {
		return core.Media{}, fmt.Errorf("%w: empty file", core.ErrInvalid)
	}
	if int64(n) > s.opt.MaxBytes {
		return core.Media{}, s.tooLarge()
	}
	sn := sniff(head)
	if !s.allow.allows(sn) {
		return core.Media{}, fmt.Errorf("%w: %s", ErrTypeNotAllowed, sn.typ)
	}

	key := newKey(sn.ext)
	body := &limitReader{r: io.MultiReader(bytes.NewReader(head), r), max: s.opt.MaxBytes}
	if err := s.b.Put(ctx, key, body); err != nil {
		if body.over {
			return core.Media{}, s.tooLarge()
		}
		return core.Media{}, fmt.Errorf("media: store: %w", err)
	}
	m := core.Media{Key: key, Name: FileName(name, key, sn.typ), Type: sn.typ, Size: body.n}
	if previewable(sn.typ) {
		p, err := s.makePreview(ctx, key, sn.typ)
		if err != nil {
			s.discard(ctx, key)
			return core.Media{}, fmt.Errorf("media: preview: %w", err)
		}
		m.Preview = p
	}
	return m, nil
}

func (s *Store) tooLarge() error {
	return fmt.Errorf("%w: over %d bytes", ErrTooLarge, s.opt.MaxBytes)
}

// discard deletes what a failed Save stored, even when ctx has ended.
func (s *Store) discard(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	_ = s.b.Delete(ctx, previewKeyOf(key))
	_ = s.b.Delete(ctx, key)
}

// Open opens the object under key (an object's Key or a preview key) and
// returns its size. Keys not in the form Save generates are refused with
// core.ErrInvalid; a missing object is core.ErrNotFound. TypeOf(key) is
// its type. The caller closes the reader, which is an io.Seeker too when the
// backend's is (local's).
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	if err := CheckKey(key); err != nil {
		return nil, 0, err
	}
	return s.b.Open(ctx, key)
}

// OpenPreview opens the preview (image/jpeg) of m. m.Preview, when set,
// must be the preview key that belongs to m.Key; when it is empty (a store
// that does not keep the field) the preview is looked up by m.Key, and a
// file without one is core.ErrNotFound.
func (s *Store) OpenPreview(ctx context.Context, m core.Media) (io.ReadCloser, int64, error) {
	if parseKey(m.Key) != objectKey {
		return nil, 0, invalidKey(m.Key)
	}
	pk := previewKeyOf(m.Key)
	if m.Preview != "" && m.Preview != pk {
		return nil, 0, fmt.Errorf("%w: preview key %q does not belong to %q", core.ErrInvalid, m.Preview, m.Key)
	}
	rc, n, err := s.b.Open(ctx, pk)
	if isNotFound(err) {
		return nil, 0, notFound("preview of", m.Key)
	}
	return rc, n, err
}

// Delete removes the object under key (an object's Key, not a preview key)
// and its preview. The preview goes first, so an interrupted Delete never
// leaves a preview without its object. A missing object is
// core.ErrNotFound.
func (s *Store) Delete(ctx context.Context, key string) error {
	if parseKey(key) != objectKey {
		return invalidKey(key)
	}
	if err := s.b.Delete(ctx, previewKeyOf(key)); err != nil && !isNotFound(err) {
		return err
	}
	return s.b.Delete(ctx, key)
}

// Fetch downloads provider media with client (http.DefaultClient when nil)
// and saves it through Save, under the same limits. req is sent with ctx. A
// response whose Content-Length is over MaxBytes is refused before its body
// is read; one without is refused when the limit is crossed. The
// response's Content-Type is ignored: the type is sniffed. name, when
// empty, is taken from the Content-Disposition header. A 404 or 410 (the
// provider's URL expired) is core.ErrNotFound. Errors name the URL without
// its query, which often holds an access token.
func (s *Store) Fetch(ctx context.Context, client *http.Client, req *http.Request, name string) (core.Media, error) {
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = redact(req.URL)
		}
		return core.Media{}, fmt.Errorf("media: fetch: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return core.Media{}, fmt.Errorf("%w: fetch %s: %s", core.ErrNotFound, redact(req.URL), resp.Status)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return core.Media{}, fmt.Errorf("media: fetch %s: %s", redact(req.URL), resp.Status)
	case resp.ContentLength > s.opt.MaxBytes:
		return core.Media{}, s.tooLarge()
	}
	if name == "" {
		if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
			name = params["filename"]
		}
	}
	m, err := s.Save(ctx, resp.Body, name)
	if err != nil {
		return core.Media{}, fmt.Errorf("media: fetch %s: %w", redact(req.URL), err)
	}
	return m, nil
}

// redact returns u without user info, query and fragment.
func redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	v := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}
	return v.String()
}

// limitReader passes r through until more than max bytes have come, then
// fails with ErrTooLarge. It reads at most one byte past max.
type limitReader struct {
	r    io.Reader
	max  int64
	n    int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.over {
		return 0, ErrTooLarge
	}
	if room := l.max + 1 - l.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		l.over = true
		return 0, ErrTooLarge
	}
	return n, err
}
