package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/media"
)

// errMediaRefused: the Graph API will not give kefu the media (an unknown or
// expired media id); retrying will not help.
var errMediaRefused = errors.New("WhatsApp would not hand over the media")

// fetchMedia stores a customer's media in kefu's media storage: it asks the
// Graph API where the media is (GET /{media_id}), then downloads it with the
// access token. The download URL is good for a few minutes only, so this
// runs while the webhook is handled.
//
// Errors isPermanentMedia reports true for (too large, a type kefu does not
// keep, expired or refused) will not go away on a retry; the message is then
// stored with a note instead of its media. Others are worth Meta's retry.
func (c *Channel) fetchMedia(ctx context.Context, ref *MediaRef) (core.Media, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/"+url.PathEscape(ref.ID), nil)
	if err != nil {
		return core.Media{}, fmt.Errorf("%w: %w", errMediaRefused, err)
	}
	var info mediaInfo
	if err := c.call(req, &info); err != nil {
		var ge *graphError
		if errors.As(err, &ge) && ge.HTTPStatus/100 == 4 && ge.HTTPStatus != http.StatusTooManyRequests &&
			ge.Code != codeToken && ge.Code != codeAppRate && ge.Code != codeAccountRate && !transientCodes[ge.Code] {
			return core.Media{}, fmt.Errorf("%w: %w", errMediaRefused, err)
		}
		return core.Media{}, err
	}
	if info.FileSize > c.media.MaxBytes() {
		return core.Media{}, fmt.Errorf("whatsapp: media %s: %d bytes: %w", ref.ID, info.FileSize, media.ErrTooLarge)
	}
	u, err := url.Parse(info.URL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") ||
		(u.Scheme == "http" && c.baseIsHTTPS()) { // never send the token in the clear
		return core.Media{}, fmt.Errorf("%w: unusable download URL", errMediaRefused)
	}
	dl, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return core.Media{}, fmt.Errorf("%w: %w", errMediaRefused, err)
	}
	dl.Header.Set("Authorization", "Bearer "+c.cfg.AccessToken)
	dl.Header.Set("User-Agent", "kefu")
	return c.media.Fetch(ctx, c.client, dl, ref.Filename)
}

func (c *Channel) baseIsHTTPS() bool {
	u, err := url.Parse(c.cfg.APIBase)
	return err == nil && u.Scheme == "https"
}

// isPermanentMedia reports whether a media fetch failed for good.
func isPermanentMedia(err error) bool {
	return errors.Is(err, errMediaRefused) || errors.Is(err, media.ErrTooLarge) ||
		errors.Is(err, media.ErrTypeNotAllowed) || errors.Is(err, core.ErrNotFound) || errors.Is(err, core.ErrInvalid)
}

// mediaProblem says in a few words why media was not kept.
func mediaProblem(err error) string {
	switch {
	case errors.Is(err, media.ErrTooLarge):
		return "over the size limit"
	case errors.Is(err, media.ErrTypeNotAllowed):
		return "file type not allowed"
	case errors.Is(err, core.ErrNotFound):
		return "expired on WhatsApp"
	case errors.Is(err, errMediaRefused):
		return "WhatsApp would not hand it over"
	}
	return "unreadable"
}

// dropMedia deletes media stored for a message that was not stored after
// all (a duplicate, or a failed write).
func (c *Channel) dropMedia(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := c.media.Delete(ctx, key); err != nil && !errors.Is(err, core.ErrNotFound) {
		c.log.Warn("whatsapp: could not delete unused media", "key", key, "err", err)
	}
}
