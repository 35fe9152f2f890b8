package media

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/kefuhq/kefu/core"
)

// Keys. An object's key is 128 random bits in lowercase hex and the
// extension of its sniffed type: "3f2a…9c.png". Its preview's key is derived
// from it: "3f2a…9c.preview.jpg". Keys are capabilities: knowing one is
// enough to read the object, so they are never derived from anything
// guessable. Both forms satisfy CheckBackendKey, and the first four hex
// digits (uniformly random) spread objects over local's shard directories.
const (
	idBytes       = 16 // 128 bits
	idLen         = 2 * idBytes
	maxExtLen     = 8
	previewSuffix = ".preview.jpg"
)

// newKey returns a fresh random key with extension ext (already checked by
// validExt).
func newKey(ext string) string {
	var b [idBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes the program instead)
	return hex.EncodeToString(b[:]) + "." + ext
}

// previewKeyOf returns the preview key of an object key. key must be valid.
func previewKeyOf(key string) string { return key[:idLen] + previewSuffix }

// validExt reports whether ext can end a key: 1 to 8 lowercase letters or
// digits.
func validExt(ext string) bool {
	if len(ext) == 0 || len(ext) > maxExtLen {
		return false
	}
	for i := 0; i < len(ext); i++ {
		if c := ext[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// validID reports whether s is exactly idLen lowercase hex digits.
func validID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// keyKind tells an object key from a preview key.
type keyKind int

const (
	badKey keyKind = iota
	objectKey
	previewKey
)

func parseKey(key string) keyKind {
	if len(key) <= idLen || !validID(key[:idLen]) || key[idLen] != '.' {
		return badKey
	}
	if key[idLen:] == previewSuffix {
		return previewKey
	}
	if validExt(key[idLen+1:]) {
		return objectKey
	}
	return badKey
}

// CheckKey reports whether key has the form of a key Save generates, for an
// object or its preview; anything else (paths, "../x", other characters,
// other lengths) is refused with an error wrapping core.ErrInvalid. HTTP
// handlers can use it on a key from a URL before going further; every Store
// method checks its keys itself.
func CheckKey(key string) error {
	if parseKey(key) == badKey {
		return invalidKey(key)
	}
	return nil
}

func invalidKey(key string) error {
	const show = 80 // keep errors short whatever a client sent
	if len(key) > show {
		key = strings.ToValidUTF8(key[:show], "") + "…"
	}
	return fmt.Errorf("%w: bad media key %q", core.ErrInvalid, key)
}

// TypeOf returns the MIME type of the object under key as far as its
// extension tells: the type Save sniffed for the types it knows an extension
// of (every default type), "image/jpeg" for a preview key, and
// "application/octet-stream" for anything else, including invalid keys.
// HTTP handlers that serve by key use it, never a type sent by a client.
func TypeOf(key string) string {
	switch parseKey(key) {
	case previewKey:
		return "image/jpeg"
	case objectKey:
		if t, ok := typeByExt[key[idLen+1:]]; ok {
			return t
		}
	}
	return "application/octet-stream"
}
