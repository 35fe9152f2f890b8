package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
	"github.com/kefuhq/kefu/media"
)

// Visitor media: a visitor uploads a file (POST /api/v1/visitor/uploads),
// then sends a message that names it (a send frame with kind image or file,
// see inFrame.Media), and downloads the files of their own conversations
// (GET /api/v1/visitor/media/{key}).
//
// An upload is bound to whoever made it by its record in the store
// (uploads.go), holding the uploader and the file's metadata as Save
// returned it. A send names only the key: the server takes the type, size and
// preview from its own record (a client cannot lie about them) and refuses a
// key that another visitor uploaded. An upload that no message uses within
// a day is deleted. (A signed upload receipt would have saved the row, but
// it would also have to carry the metadata back through the client, and
// could not authorise the uploader's own download; one small row per
// upload, rate-limited, is the simpler contract.)
//
// Downloads are authorised per request with the visitor token in the
// Authorization header (never in the URL): the file must be the visitor's own
// upload, or the media of message_id, a public message in one of the
// visitor's conversations. Anything else is 404, the same as a file that does
// not exist. The widget fetches with the header and shows blob URLs.

// Routes.
const (
	pathUploads      = "/api/v1/visitor/uploads"
	pathVisitorMedia = "/api/v1/visitor/media/{key}"

	// multipartSlack is what a multipart body may hold beyond the file
	// itself: part headers, boundaries, a few small fields.
	multipartSlack = 64 << 10
	// uploadFormField is the multipart field holding the file.
	uploadFormField = "file"
)

// visitorScope is how an upload record names a visitor of this instance.
func (rt *realtime) visitorScope(v visitor) string { return rt.c.name + "/" + v.identity }

// mountVisitorMedia registers the visitor media routes.
func (rt *realtime) mountVisitorMedia(mux *http.ServeMux) {
	mux.HandleFunc("POST "+pathUploads, rt.visitorEndpoint(onlyQuery(rt.serveVisitorUpload, "name")))
	mux.HandleFunc("OPTIONS "+pathUploads, rt.preflight)
	mux.HandleFunc("GET "+pathVisitorMedia, rt.visitorEndpoint(rt.serveVisitorMediaFile))
	mux.HandleFunc("OPTIONS "+pathVisitorMedia, rt.preflight)
	allowOnly(mux, pathUploads, "POST", "OPTIONS")
	allowOnly(mux, pathVisitorMedia, "GET", "OPTIONS")
}

// errNoMediaStore answers when the node has no media storage (a channel
// built without Deps.Media, as some tests do).
var errNoMediaStore = &httpx.RequestError{Status: http.StatusServiceUnavailable, Code: httpx.CodeUnavailable,
	Msg: "media storage is not configured"}

// serveVisitorUpload is POST /api/v1/visitor/uploads: the body is a
// multipart form whose "file" field holds the file, or the file itself (any
// other Content-Type; ?name= gives its name). The answer is 201 with the
// stored file's core.Media.
func (rt *realtime) serveVisitorUpload(w http.ResponseWriter, r *http.Request) {
	v, err := rt.parseVisitor(bearerToken(r))
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	st := rt.c.deps.Media
	if st == nil {
		httpx.FromError(w, rt.log, errNoMediaStore)
		return
	}
	// Uploads share messages_per_minute with sends, in a budget of their own.
	if ok, wait := rt.msgLimit.Allow("upload/" + v.identity); !ok {
		httpx.TooMany(w, wait)
		return
	}
	limit := st.MaxBytes() + multipartSlack
	if r.ContentLength > limit {
		httpx.FromError(w, rt.log, uploadTooLarge(st))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	body, name, err := uploadBody(r)
	if err != nil {
		httpx.FromError(w, rt.log, uploadError(st, err))
		return
	}
	ctx := r.Context()
	m, err := st.Save(ctx, body, name)
	if err != nil {
		httpx.FromError(w, rt.log, uploadError(st, err))
		return
	}
	// The address's upload budget is charged once the size is known; a
	// file over what is left is not kept.
	if ok, wait := rt.uploadLimit.AllowN(rt.clientKey(r), int((m.Size+1<<20-1)>>20)); !ok {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), uploadCleanupTimeout)
		_ = st.Delete(dctx, m.Key)
		cancel()
		httpx.TooMany(w, wait)
		return
	}
	if err := rt.c.recordUpload(ctx, uploadRecord{Visitor: rt.visitorScope(v), Media: m}); err != nil {
		// Without its record nobody could send the file: do not keep it.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), uploadCleanupTimeout)
		_ = st.Delete(dctx, m.Key)
		cancel()
		httpx.FromError(w, rt.log, err)
		return
	}
	httpx.JSON(w, http.StatusCreated, m)
}

// uploadBody returns the file an upload request carries and the name it
// was given: the first multipart part named "file", or the whole body.
func uploadBody(r *http.Request) (io.Reader, string, error) {
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "multipart/form-data" {
		return r.Body, r.URL.Query().Get("name"), nil
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, "", httpx.BadRequest("malformed multipart body: %s", err.Error())
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil, "", httpx.BadRequest("the multipart body has no %q field", uploadFormField)
		}
		if err != nil {
			return nil, "", fmt.Errorf("read the multipart body: %w", err)
		}
		if part.FormName() == uploadFormField {
			return part, formFileName(part), nil
		}
		// Another field: skip it (the body's limit bounds what is read).
		if _, err := io.Copy(io.Discard, part); err != nil {
			return nil, "", fmt.Errorf("read the multipart body: %w", err)
		}
	}
}

// formEscapes undoes what browsers do to a file name in a multipart body
// (the HTML standard's multipart/form-data encoding): a quote becomes %22,
// CR %0D and LF %0A. Line breaks have no place in a name.
var formEscapes = strings.NewReplacer("%22", `"`, "%0D", "", "%0A", "")

// formFileName is part's file name as the user saw it.
func formFileName(part *multipart.Part) string { return formEscapes.Replace(part.FileName()) }

// uploadError turns what went wrong reading or storing an upload into the
// answer: 413 over the size limit, 415 for a type not allowed, 400 for an
// empty or malformed body.
func uploadError(st *media.Store, err error) error {
	var tooBig *http.MaxBytesError
	var re *httpx.RequestError
	switch {
	case errors.Is(err, media.ErrTooLarge), errors.As(err, &tooBig):
		return uploadTooLarge(st)
	case errors.Is(err, media.ErrTypeNotAllowed):
		return &httpx.RequestError{Status: http.StatusUnsupportedMediaType, Code: httpx.CodeUnsupported, Msg: strings.TrimPrefix(err.Error(), core.ErrInvalid.Error()+": ")}
	case errors.As(err, &re):
		return err
	case errors.Is(err, core.ErrInvalid):
		return httpx.BadRequest("%s", strings.TrimPrefix(err.Error(), core.ErrInvalid.Error()+": "))
	case errors.Is(err, multipart.ErrMessageTooLarge):
		return uploadTooLarge(st)
	}
	return err
}

func uploadTooLarge(st *media.Store) error {
	return &httpx.RequestError{Status: http.StatusRequestEntityTooLarge, Code: httpx.CodeTooLarge,
		Msg: fmt.Sprintf("file over the limit of %d bytes", st.MaxBytes())}
}

// uploadCleanupTimeout bounds deleting a file whose upload failed.
const uploadCleanupTimeout = 30 * time.Second

// errNoUpload answers a send naming a file that is not the sender's upload.
func errNoUpload(id string) *protoError {
	return &protoError{Code: codeNotFound, Msg: "no such upload: upload the file first (POST " + pathUploads + ")", ID: id}
}

// sendContent is the message a send frame carries: its text, or an image or
// file with an optional caption (sendableMedia says which files).
func (p *peer) sendContent(ctx context.Context, f *inFrame) (core.Message, error) {
	kind := core.ContentKind(f.Kind)
	if kind == "" || kind == core.KindText {
		return core.Message{Kind: core.KindText, Text: f.Text}, nil
	}
	visitor := ""
	if !p.isAgent() {
		visitor = p.rt.visitorScope(p.vis)
	}
	m, err := p.rt.c.sendableMedia(ctx, f.Media.Key, f.Media.Name, kind, visitor)
	if errors.Is(err, core.ErrNotFound) {
		return core.Message{}, errNoUpload(f.ID)
	}
	if err != nil {
		return core.Message{}, err
	}
	return core.Message{Kind: kind, Text: f.Text, Media: &m}, nil
}

// serveVisitorMediaFile is GET /api/v1/visitor/media/{key}[?message_id=N]
// [&preview=1]: a file of the visitor's, or its preview.
func (rt *realtime) serveVisitorMediaFile(w http.ResponseWriter, r *http.Request) {
	v, err := rt.parseVisitor(bearerToken(r))
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	st := rt.c.deps.Media
	if st == nil {
		httpx.FromError(w, rt.log, errNoMediaStore)
		return
	}
	q := r.URL.Query()
	msgID, err := queryInt(q, "message_id")
	if err != nil {
		httpx.FromError(w, rt.log, httpx.BadRequest("message_id must be a whole number"))
		return
	}
	m, err := rt.visitorMedia(r.Context(), v, r.PathValue("key"), msgID)
	if err != nil {
		httpx.FromError(w, rt.log, err)
		return
	}
	// Expose the file name to the widget's script.
	if w.Header().Get("Access-Control-Allow-Origin") != "" {
		w.Header().Set("Access-Control-Expose-Headers", "Retry-After, Content-Disposition")
	}
	serveMediaFile(w, r, st, m, q.Get("preview") == "1", rt.log)
}

// visitorMedia returns the media under key if the visitor may read it: their
// own upload, or the media of message msgID (when not 0), a public message
// in one of their conversations. Anything else is core.ErrNotFound.
func (rt *realtime) visitorMedia(ctx context.Context, v visitor, key string, msgID int64) (core.Media, error) {
	notFound := fmt.Errorf("no such file: %w", core.ErrNotFound)
	if media.CheckKey(key) != nil {
		return core.Media{}, notFound
	}
	if msgID > 0 {
		m, err := rt.store.Message(ctx, msgID)
		switch {
		case errors.Is(err, core.ErrNotFound):
		case err != nil:
			return core.Media{}, err
		case m.Media != nil && m.Media.Key == key && m.VisibleToContact():
			_, err := rt.visitorConversation(ctx, v.identity, m.ConversationID)
			if err == nil {
				return *m.Media, nil
			}
			if !errors.Is(err, core.ErrNotFound) {
				return core.Media{}, err
			}
		}
	}
	rec, _, err := rt.c.uploadRecordOf(ctx, key)
	switch {
	case errors.Is(err, core.ErrNotFound):
		return core.Media{}, notFound
	case err != nil:
		return core.Media{}, err
	case rec.Visitor != rt.visitorScope(v):
		return core.Media{}, notFound
	}
	return rec.Media, nil
}

// serveMediaFile writes a stored file, or its preview, by kefu's serving
// rules: always X-Content-Type-Options: nosniff and the type stored at
// upload (sniffed then, never taken from a client); previews inline,
// originals as attachments named by their (sanitised) name; a CSP that lets
// nothing in the file run if it is opened as a page anyway.
func serveMediaFile(w http.ResponseWriter, r *http.Request, st *media.Store, m core.Media, preview bool, log *slog.Logger) {
	ctx := r.Context()
	var (
		rc   io.ReadCloser
		size int64
		err  error
	)
	ctype, disp := m.Type, "attachment"
	name := m.Name
	if preview {
		rc, size, err = st.OpenPreview(ctx, m)
		ctype, disp = "image/jpeg", "inline"
		if name != "" {
			name = strings.TrimSuffix(name, nameExt(name)) + ".jpg"
		}
	} else {
		rc, size, err = st.Open(ctx, m.Key)
	}
	if err != nil {
		status, code := httpx.Status(err)
		msg := "no such file"
		if status != http.StatusNotFound {
			log.Error("media: open failed", "key", m.Key, "err", err)
			msg = "could not open the file"
		}
		httpx.Error(w, status, code, msg)
		return
	}
	defer rc.Close()
	if ctype == "" {
		ctype = media.TypeOf(m.Key)
	}
	if name == "" {
		name = m.Key
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	cd := mime.FormatMediaType(disp, map[string]string{"filename": name})
	if cd == "" {
		cd = disp
	}
	h.Set("Content-Disposition", cd)
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	// The answer depends on the token: private caches only, keyed by it.
	h.Set("Cache-Control", "private, max-age=3600")
	h.Add("Vary", "Authorization")
	if rs, ok := rc.(io.ReadSeeker); ok {
		http.ServeContent(w, r, "", time.Time{}, rs) // ranges, for audio and video
		return
	}
	h.Set("Content-Length", fmt.Sprint(size))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = io.Copy(w, rc)
	}
}

// nameExt returns name's extension with its dot ("" for none).
func nameExt(name string) string {
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		return name[i:]
	}
	return ""
}
