package wxapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/silenceper/wechat/v2/util"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// The library's calls take no context (a slow WeChat would hold a delivery
// past its deadline) and report HTTP failures with the request URL, access
// token included, in the error text. kefu therefore makes its API calls
// with these helpers: the same wire format and the same Client, with ctx,
// typed errors and redacted URLs.

// maxAnswer bounds a JSON answer read from WeChat.
const maxAnswer = 1 << 20

// PostJSON posts in as JSON to rawURL and decodes the answer into out (when
// not nil). A non-zero errcode is an *APIError, a status other than 200 an
// *HTTPError. api names the call in errors.
func PostJSON(ctx context.Context, api, rawURL string, in, out any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // customers' "<" and "&" stay as typed
	if err := enc.Encode(in); err != nil {
		return fmt.Errorf("wechat %s: encode: %w", api, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, &buf)
	if err != nil {
		return fmt.Errorf("wechat %s: %w", api, err)
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	return doJSON(req, api, out)
}

// GetJSON is PostJSON for a GET.
func GetJSON(ctx context.Context, api, rawURL string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return fmt.Errorf("wechat %s: %w", api, err)
	}
	return doJSON(req, api, out)
}

func doJSON(req *http.Request, api string, out any) error {
	resp, err := Client().Do(req)
	if err != nil {
		return fmt.Errorf("wechat %s: %w", api, redact(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
		return &HTTPError{API: api, Status: resp.StatusCode}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("wechat %s: read answer: %w", api, redact(err))
	}
	return Decode(api, b, out)
}

// Decode reads a JSON answer: its errcode first, then out (when not nil).
func Decode(api string, b []byte, out any) error {
	var ce util.CommonError
	if err := json.Unmarshal(b, &ce); err != nil {
		return fmt.Errorf("wechat %s: malformed answer: %w", api, err)
	}
	if err := CheckCode(api, ce); err != nil {
		return err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("wechat %s: malformed answer: %w", api, err)
		}
	}
	return nil
}

// UploadAnswer is what media/upload answers. (Its created_at is a number
// from the Official Account API and a string from Work WeChat's; kefu does
// not read it.)
type UploadAnswer struct {
	Type    string `json:"type"`
	MediaID string `json:"media_id"`
}

// Upload posts one file to a media/upload URL as the multipart field
// "media", as both APIs document, and returns its media_id.
func Upload(ctx context.Context, api, rawURL, filename, contentType string, r io.Reader) (string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", mime.FormatMediaType("form-data", map[string]string{"name": "media", "filename": filename}))
	h.Set("Content-Type", contentType)
	part, err := mw.CreatePart(h)
	if err == nil {
		_, err = io.Copy(part, r)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		return "", fmt.Errorf("wechat %s: build upload: %w", api, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, &buf)
	if err != nil {
		return "", fmt.Errorf("wechat %s: %w", api, err)
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var ans UploadAnswer
	if err := doJSON(req, api, &ans); err != nil {
		return "", err
	}
	if ans.MediaID == "" {
		return "", &APIError{API: api, Code: CodeSystemBusy, Msg: "answer without media_id"}
	}
	return ans.MediaID, nil
}

// FetchMedia downloads a file from a media/get URL into store and returns
// its reference. WeChat answers with the file itself, or with JSON: an
// errcode (*APIError), or, for an Official Account video, a video_url that
// is downloaded in turn. Size and type limits are store's; refusals wrap
// core.ErrInvalid (media.ErrTooLarge, media.ErrTypeNotAllowed).
func FetchMedia(ctx context.Context, api string, store *media.Store, rawURL, name string) (core.Media, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return core.Media{}, fmt.Errorf("wechat %s: %w", api, err)
	}
	resp, err := Client().Do(req)
	if err != nil {
		return core.Media{}, fmt.Errorf("wechat %s: %w", api, redact(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return core.Media{}, fmt.Errorf("%w: wechat %s: HTTP %d", core.ErrNotFound, api, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return core.Media{}, &HTTPError{API: api, Status: resp.StatusCode}
	}
	br := bufio.NewReader(resp.Body)
	if isJSONAnswer(resp.Header.Get("Content-Type"), br) {
		b, err := io.ReadAll(io.LimitReader(br, maxAnswer))
		if err != nil {
			return core.Media{}, fmt.Errorf("wechat %s: read answer: %w", api, redact(err))
		}
		var ans struct {
			VideoURL string `json:"video_url"`
		}
		if err := Decode(api, b, &ans); err != nil {
			return core.Media{}, err
		}
		u, err := url.Parse(ans.VideoURL)
		if ans.VideoURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return core.Media{}, fmt.Errorf("wechat %s: answer holds no file", api)
		}
		vreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return core.Media{}, fmt.Errorf("wechat %s: %w", api, err)
		}
		return store.Fetch(ctx, Client(), vreq, name)
	}
	if resp.ContentLength > store.MaxBytes() {
		return core.Media{}, fmt.Errorf("wechat %s: %w", api, media.ErrTooLarge)
	}
	if name == "" {
		if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil {
			name = params["filename"]
		}
	}
	return store.Save(ctx, br, name)
}

// isJSONAnswer reports whether a media/get answer is JSON rather than the
// file: WeChat sends its errors (and video URLs) as application/json or
// text/plain.
func isJSONAnswer(contentType string, br *bufio.Reader) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt != "application/json" && mt != "text/plain" && mt != "" {
		return false
	}
	b, err := br.Peek(1)
	return err == nil && b[0] == '{'
}

// redact removes the query (which holds the access token) from the URL a
// *url.Error names.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery, u.Fragment = "", ""
			ue.URL = u.String()
		} else if i := strings.IndexByte(ue.URL, '?'); i >= 0 {
			ue.URL = ue.URL[:i]
		}
	}
	return err
}
