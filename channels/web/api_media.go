package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
	"github.com/kefuhq/kefu/media"
)

// Agents' media: uploading a file to send as a reply or a note, and
// downloading the files of any conversation (every agent sees every
// conversation). Only agents reach these endpoints: they sit behind the
// bearer token like the rest of the API, so a visitor (whose files come
// from the visitor endpoints, limited to their own conversations) or anyone
// else gets 401.
//
// Served files never run in the console's origin: they carry the type
// sniffed when they were saved (never one a client claimed), nosniff, a
// sandboxing Content-Security-Policy, and originals come as attachments.

// uploadEnvelope is what a multipart body may carry beyond the file itself
// (boundaries, part headers, a file name): the body's cap is the media
// limit plus this.
const uploadEnvelope = 64 << 10

// mediaError turns an error of media.Store.Save into its answer: 413 for
// a file over media.max_bytes (or a body over the cap), 415 for a type
// that is not allowed.
func mediaError(err error, max int64) error {
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, media.ErrTooLarge), errors.As(err, &tooBig):
		return &httpx.RequestError{Status: http.StatusRequestEntityTooLarge, Code: httpx.CodeTooLarge,
			Msg: fmt.Sprintf("file over %d bytes", max)}
	case errors.Is(err, media.ErrTypeNotAllowed):
		return &httpx.RequestError{Status: http.StatusUnsupportedMediaType, Code: httpx.CodeUnsupported,
			Msg: strings.TrimPrefix(err.Error(), core.ErrInvalid.Error()+": ")}
	}
	return err
}

// upload is POST /api/v1/uploads: a multipart/form-data body whose "file"
// part is stored (type sniffed from the content, size limited while
// streaming) and answered 201 with its media reference, for a reply or a
// note to send. Like a visitor's, the upload has a record (uploads.go), and
// is deleted if no message uses it within a day.
func (a *api) upload(w http.ResponseWriter, r *http.Request, me core.Agent) error {
	st := a.c.deps.Media
	if st == nil {
		return errNoMediaStore
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return &httpx.RequestError{Status: http.StatusUnsupportedMediaType, Code: httpx.CodeUnsupported,
			Msg: "Content-Type must be multipart/form-data with a file part named \"file\""}
	}
	r.Body = http.MaxBytesReader(w, r.Body, st.MaxBytes()+uploadEnvelope)
	mr, err := r.MultipartReader()
	if err != nil {
		return httpx.BadRequest("malformed multipart body")
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return httpx.BadRequest("no part named \"file\" in the body")
		}
		if err != nil {
			if me := mediaError(err, st.MaxBytes()); me != err {
				return me
			}
			return httpx.BadRequest("malformed multipart body")
		}
		if part.FormName() != "file" {
			continue // NextPart skips what is left of it
		}
		ctx := r.Context()
		m, err := st.Save(ctx, part, formFileName(part))
		if err != nil {
			return mediaError(err, st.MaxBytes())
		}
		if err := a.c.recordUpload(ctx, uploadRecord{AgentID: me.ID, Media: m}); err != nil {
			// Without its record the sweep would never find the file.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), uploadCleanupTimeout)
			_ = st.Delete(dctx, m.Key)
			cancel()
			return err
		}
		httpx.JSON(w, http.StatusCreated, apiViewMedia(m))
		return nil
	}
}

func apiViewMedia(m core.Media) apiMediaView {
	return apiMediaView{Key: m.Key, Name: m.Name, Type: m.Type, Size: m.Size, Preview: m.Preview}
}

// getMedia is GET /api/v1/media/{key}: the stored file, as an attachment.
func (a *api) getMedia(w http.ResponseWriter, r *http.Request, _ core.Agent) error {
	return a.serveMedia(w, r, false)
}

// getMediaPreview is GET /api/v1/media/{key}/preview: the JPEG preview of
// an image, inline. A file without one is 404.
func (a *api) getMediaPreview(w http.ResponseWriter, r *http.Request, _ core.Agent) error {
	return a.serveMedia(w, r, true)
}

func (a *api) serveMedia(w http.ResponseWriter, r *http.Request, preview bool) error {
	st := a.c.deps.Media
	if st == nil {
		return errNoMediaStore
	}
	key := r.PathValue("key")
	if err := media.CheckKey(key); err != nil {
		return httpx.BadRequest("not a media key")
	}
	var (
		rc   io.ReadCloser
		size int64
		err  error
		typ  = media.TypeOf(key)
	)
	if preview {
		rc, size, err = st.OpenPreview(r.Context(), core.Media{Key: key})
		typ = "image/jpeg"
	} else {
		rc, size, err = st.Open(r.Context(), key)
	}
	if errors.Is(err, core.ErrInvalid) {
		return httpx.BadRequest("not a media key")
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", typ)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	// A key names one immutable object; only the agent's browser keeps it.
	h.Set("Cache-Control", "private, max-age=31536000, immutable")
	if preview {
		h.Set("Content-Disposition", "inline")
	} else {
		h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": key}))
	}
	if rs, ok := rc.(io.ReadSeeker); ok {
		http.ServeContent(w, r, "", time.Time{}, rs) // ranges, HEAD, Content-Length
		return nil
	}
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.Copy(w, rc)
	}
	return nil
}

// replyMedia turns the media a reply or note refers to (a key from an
// upload, or from any message) into the message's media: the type, the size
// and the preview come from storage, never from the request; the name is
// only for display and is sanitised again.
func (a *api) replyMedia(ctx context.Context, ref *apiMediaRef, kind core.ContentKind) (*core.Media, error) {
	if a.c.deps.Media == nil {
		return nil, errNoMediaStore
	}
	m, err := a.c.sendableMedia(ctx, ref.Key, ref.Name, kind, "")
	if errors.Is(err, core.ErrNotFound) {
		return nil, httpx.BadRequest("media.key %q names no uploaded file; upload it first", ref.Key)
	}
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// mediaPreviewSuffix ends the key of an image's preview.
const mediaPreviewSuffix = ".preview.jpg"
