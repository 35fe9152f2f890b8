package wxapi

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/silenceper/wechat/v2/util"
)

// MaxSkew is how far a callback's timestamp may be from kefu's clock. WeChat
// retries a callback within seconds, so a genuine one is never this old; a
// captured one replayed later is refused.
const MaxSkew = 5 * time.Minute

// Signature returns WeChat's callback signature of parts: the SHA-1 of the
// parts sorted and concatenated, in lower-case hex. The Official Account
// signs (token, timestamp, nonce); safe mode and Work WeChat sign
// (token, timestamp, nonce, encrypted message) as msg_signature.
func Signature(parts ...string) string {
	// util.Signature sorts its argument in place.
	return util.Signature(append([]string(nil), parts...)...)
}

// VerifySignature reports, in constant time, whether sig is the signature
// of parts. Case is ignored (hex).
func VerifySignature(sig string, parts ...string) bool {
	want := Signature(parts...)
	return subtle.ConstantTimeCompare([]byte(strings.ToLower(sig)), []byte(want)) == 1
}

// ErrStale is returned by CheckTimestamp for a timestamp too far from now.
var ErrStale = errors.New("stale timestamp")

// CheckTimestamp checks a callback's timestamp (unix seconds): present,
// numeric, and within MaxSkew of now.
func CheckTimestamp(ts string, now time.Time) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("missing or malformed timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > MaxSkew || d < -MaxSkew {
		return ErrStale
	}
	return nil
}

// CheckAESKey checks an EncodingAESKey: 43 characters of base64 that decode
// (with the "=" WeChat leaves off) to a 32-byte AES key.
func CheckAESKey(key string) error {
	if len(key) != 43 {
		return fmt.Errorf("must be the 43-character EncodingAESKey, got %d characters", len(key))
	}
	b, err := base64.StdEncoding.DecodeString(key + "=")
	if err != nil || len(b) != 32 {
		return errors.New("not a valid EncodingAESKey (43 characters of base64)")
	}
	return nil
}

// Decrypt opens an encrypted callback payload (the Encrypt element, or a
// Work WeChat echostr) with the EncodingAESKey and checks that it was
// sealed for receiverID (the Official Account's AppID, or the WeCom CorpID).
func Decrypt(receiverID, encrypted, aesKey string) ([]byte, error) {
	_, plain, err := util.DecryptMsg(receiverID, encrypted, aesKey)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	return plain, nil
}

// Encrypt seals plain for receiverID as WeChat does (for tests and passive
// replies): base64 of AES-256-CBC over random(16) + length(4) + plain +
// receiverID.
func Encrypt(receiverID string, plain []byte, aesKey string) (string, error) {
	random := make([]byte, 16)
	if _, err := rand.Read(random); err != nil {
		return "", err
	}
	b, err := util.EncryptMsg(random, plain, receiverID, aesKey)
	if err != nil {
		return "", fmt.Errorf("encrypt: %w", err)
	}
	return string(b), nil
}
