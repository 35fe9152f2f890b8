package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kefuhq/kefu/core"
	"github.com/kefuhq/kefu/httpx"
	"github.com/kefuhq/kefu/media"
)

// Uploads, and what becomes of those no message uses.
//
// A file uploaded by a visitor (POST /api/v1/visitor/uploads) or an agent
// (POST /api/v1/uploads) is stored at once, before any message names it. It
// has a record in the store's settings, "media.upload.KEY" (uploadRecord):
// who uploaded it, its metadata as media.Store.Save returned it, when, and
// whether a message has used it. The store is shared by every node, so an
// upload on one node can be sent through another.
//
// Every send naming an upload marks its record sent, now (store.
// ReplaceSetting from the value it read), before its message is stored.
//
// The sweep (sweepUploads, with the API's hourly housekeeping on every
// node) settles each upload older than uploadKeep whose last send, if any,
// is older than sendGrace (its message is stored or refused by then). If a
// stored message carries the file (store.MediaUsed: also a send through a
// node of an earlier version, which does not mark records), the record is
// dropped and the file stays: the messages carrying it authorise its
// download. If none does (never sent, or every send was refused), the
// record is first marked expired, only from the value the sweep read, so
// that a send racing it either marks the record first (and the sweep
// leaves it) or finds it expired (and is refused as if the upload did not
// exist); then the file goes, then the record. A sweep that fails between
// the two leaves the expired record for the next one.

const (
	// uploadSettingPrefix + key is the store setting recording an upload.
	uploadSettingPrefix = "media.upload."
	// uploadKeep is how long an upload waits for a message to use it.
	uploadKeep = 24 * time.Hour
	// sendGrace is how long after a send the sweep leaves an upload be:
	// far longer than storing a message takes.
	sendGrace = time.Hour
	// uploadSweepPage is how many records the sweep reads at a time.
	uploadSweepPage = 500
)

// uploadRecord is the value of an upload's store setting.
type uploadRecord struct {
	// Visitor is the uploader's instance and identity ("web/a:3f9c…"), as
	// peer.scope spells it; empty for an agent's upload.
	Visitor string `json:"visitor,omitempty"`
	// AgentID is the uploading agent; 0 for a visitor's upload.
	AgentID int64      `json:"agent_id,omitempty"`
	Media   core.Media `json:"media"`
	// At is when the file was uploaded. Records written before kefu kept
	// it have none; the sweep dates them when it first sees them.
	At time.Time `json:"at,omitzero"`
	// SentAt is when a message last named the file (it may have been
	// refused); zero before any did.
	SentAt time.Time `json:"sent_at,omitzero"`
	// Expired: the sweep is deleting the file; nobody may send it.
	Expired bool `json:"expired,omitempty"`
}

// errUploadExpired is the upload's record saying the sweep is deleting it.
var errUploadExpired = fmt.Errorf("the upload expired: %w", core.ErrNotFound)

// recordUpload stores the record of a new upload, dated now.
func (c *Channel) recordUpload(ctx context.Context, rec uploadRecord) error {
	rec.At = c.now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return c.store.PutSetting(ctx, uploadSettingPrefix+rec.Media.Key, string(b))
}

// uploadRecordOf reads the record of the upload of key, and the stored value
// it came from: core.ErrNotFound when there is none (not a key, or not
// uploaded through these endpoints), errUploadExpired when the sweep is
// deleting it.
func (c *Channel) uploadRecordOf(ctx context.Context, key string) (uploadRecord, string, error) {
	if err := media.CheckKey(key); err != nil {
		return uploadRecord{}, "", fmt.Errorf("upload %q: %w", key, core.ErrNotFound)
	}
	raw, err := c.store.Setting(ctx, uploadSettingPrefix+key)
	if err != nil {
		return uploadRecord{}, "", err
	}
	rec, err := parseUploadRecord(key, raw)
	if err != nil {
		return uploadRecord{}, "", err
	}
	if rec.Expired {
		return uploadRecord{}, "", errUploadExpired
	}
	return rec, raw, nil
}

func parseUploadRecord(key, raw string) (uploadRecord, error) {
	var rec uploadRecord
	if err := json.Unmarshal([]byte(raw), &rec); err != nil || rec.Media.Key != key {
		return uploadRecord{}, fmt.Errorf("upload record of %q is malformed", key)
	}
	return rec, nil
}

// useUpload returns the media of the upload of key for a message about to
// be stored, having marked its record sent now. check says whether the
// sender may send this upload: its error is the answer when it does not.
func (c *Channel) useUpload(ctx context.Context, key string, check func(uploadRecord) error) (core.Media, error) {
	// The record changes under a send only when another send of the same
	// file marks it, or the sweep expires it: a few tries settle that.
	for range 5 {
		rec, raw, err := c.uploadRecordOf(ctx, key)
		if err != nil {
			return core.Media{}, err
		}
		if err := check(rec); err != nil {
			return core.Media{}, err
		}
		rec.SentAt = c.now().UTC()
		b, err := json.Marshal(rec)
		if err != nil {
			return core.Media{}, err
		}
		ok, err := c.store.ReplaceSetting(ctx, uploadSettingPrefix+key, raw, string(b))
		if err != nil {
			return core.Media{}, err
		}
		if ok {
			return rec.Media, nil
		}
		// Changed since it was read: another send marked it, or the sweep
		// expired it. Read it again.
	}
	return core.Media{}, fmt.Errorf("upload %q: its record keeps changing: %w", key, core.ErrConflict)
}

// sendableMedia returns the media a message of kind image or file may
// carry for the stored file key, renamed to name unless name is empty.
// visitor is the scope of the visitor sending (rt.visitorScope), who may
// send only their own uploads; "" for an agent, who may send any upload and
// any other stored file that is not an upload (provider media a channel
// fetched). Anything else is core.ErrNotFound; a file that is not an image
// sent as one is a RequestError (400), before the upload is marked sent.
func (c *Channel) sendableMedia(ctx context.Context, key, name string, kind core.ContentKind, visitor string) (core.Media, error) {
	fits := func(m core.Media) error {
		if kind == core.KindImage && !strings.HasPrefix(m.Type, "image/") {
			return httpx.BadRequest("the file is %s, not an image: send it with kind file", m.Type)
		}
		return nil
	}
	m, err := c.useUpload(ctx, key, func(rec uploadRecord) error {
		if visitor != "" && rec.Visitor != visitor {
			return fmt.Errorf("upload %q: %w", key, core.ErrNotFound)
		}
		return fits(rec.Media)
	})
	if visitor == "" && errors.Is(err, core.ErrNotFound) && !errors.Is(err, errUploadExpired) {
		if m, err = c.storedMedia(ctx, key); err == nil {
			err = fits(m)
		}
	}
	if err != nil {
		return core.Media{}, err
	}
	if name != "" {
		m.Name = media.FileName(name, m.Key, m.Type)
	}
	return m, nil
}

// storedMedia describes a stored file that has no upload record (provider
// media a channel fetched): its type from its key, its size from storage,
// and its preview if it has one.
func (c *Channel) storedMedia(ctx context.Context, key string) (core.Media, error) {
	st := c.deps.Media
	if st == nil {
		return core.Media{}, errNoMediaStore
	}
	if err := media.CheckKey(key); err != nil || strings.HasSuffix(key, mediaPreviewSuffix) {
		return core.Media{}, fmt.Errorf("no such file %q: %w", key, core.ErrNotFound)
	}
	rc, size, err := st.Open(ctx, key)
	if err != nil {
		return core.Media{}, err
	}
	_ = rc.Close()
	m := core.Media{Key: key, Type: media.TypeOf(key), Size: size}
	// The preview, if the image has one: its key is the object's id with
	// the preview suffix, which OpenPreview confirms.
	pk := key[:strings.IndexByte(key, '.')] + mediaPreviewSuffix
	if rc, _, err := st.OpenPreview(ctx, core.Media{Key: key, Preview: pk}); err == nil {
		_ = rc.Close()
		m.Preview = pk
	}
	return m, nil
}

// sweepUploads deletes the uploads that no message used within uploadKeep
// before now, and drops the records of sent uploads as old; see the top of
// this file. It returns how many files it deleted. A record it cannot
// settle is left for the next sweep.
func (c *Channel) sweepUploads(ctx context.Context, now time.Time) (int, error) {
	deleted := 0
	var errs []error
	after := ""
	for {
		page, err := c.store.Settings(ctx, uploadSettingPrefix, after, uploadSweepPage)
		if err != nil {
			return deleted, err
		}
		for _, kv := range page {
			after = kv.Key
			gone, err := c.sweepUpload(ctx, kv, now)
			if err != nil {
				if ctx.Err() != nil {
					return deleted, ctx.Err()
				}
				if len(errs) < 3 {
					errs = append(errs, err)
				}
				continue
			}
			if gone {
				deleted++
			}
		}
		if len(page) < uploadSweepPage {
			return deleted, errors.Join(errs...)
		}
	}
}

// sweepUpload settles one upload record, and reports whether it deleted
// the file.
func (c *Channel) sweepUpload(ctx context.Context, kv core.Setting, now time.Time) (bool, error) {
	key := strings.TrimPrefix(kv.Key, uploadSettingPrefix)
	rec, err := parseUploadRecord(key, kv.Value)
	if err != nil {
		return false, err // nobody can send it; an operator may look
	}
	swap := func(rec uploadRecord) (string, bool, error) {
		b, err := json.Marshal(rec)
		if err != nil {
			return "", false, err
		}
		ok, err := c.store.ReplaceSetting(ctx, kv.Key, kv.Value, string(b))
		return string(b), ok, err
	}
	switch {
	case rec.Expired:
	case rec.At.IsZero():
		// From before uploads were dated: dated now, and settled a day
		// later like any other.
		rec.At = now.UTC()
		_, _, err := swap(rec)
		return false, err
	case now.Sub(rec.At) < uploadKeep, !rec.SentAt.IsZero() && now.Sub(rec.SentAt) < sendGrace:
		return false, nil
	default:
		used, err := c.store.MediaUsed(ctx, key)
		if err != nil {
			return false, err
		}
		if used {
			// The file is the messages' now: only the record goes.
			_, err := c.store.DeleteSetting(ctx, kv.Key, kv.Value)
			return false, err
		}
		rec.Expired = true
		raw, ok, err := swap(rec)
		if err != nil || !ok {
			return false, err // a send marked it meanwhile: it stays
		}
		kv.Value = raw
	}
	st := c.deps.Media
	if st == nil {
		return false, errNoMediaStore
	}
	if err := st.Delete(ctx, key); err != nil && !errors.Is(err, core.ErrNotFound) {
		return false, fmt.Errorf("delete the unsent upload %s: %w", key, err)
	}
	_, err = c.store.DeleteSetting(ctx, kv.Key, kv.Value)
	return true, err
}
