package wxapi

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"

	"github.com/silenceper/wechat/v2/util"
)

// WeChat's errcodes that kefu acts on. Both the Official Account and the
// Work WeChat API use them.
const (
	CodeSystemBusy       = -1    // try again later
	CodeInvalidToken     = 40001 // access_token invalid or not the latest
	CodeInvalidToken2    = 40014 // access_token invalid
	CodeTokenExpired     = 42001 // access_token expired
	CodeInvalidOpenID    = 40003 // not a follower of this account
	CodeInvalidMediaID   = 40007
	CodeUnsubscribed     = 43004 // the user does not follow the account
	CodeAPIFreqLimit     = 45009 // daily API quota or frequency exceeded
	CodeAPIConcurrency   = 45033 // too many concurrent calls (WeCom)
	CodeWindowClosed     = 45015 // the 48-hour customer-service window has closed
	CodeResponseCount    = 45047 // more than 20 customer-service messages since the user last wrote
	CodeAPIUnauthorized  = 48001 // the account lacks this API permission
	CodeIPNotAllowed     = 40164 // calling IP not in the Official Account's allow-list
	CodeWorkIPNotAllowed = 60020 // calling IP not among the WeCom app's trusted IPs
	CodeInvalidAppID     = 40013
	CodeInvalidSecret    = 40125
	CodeAppIDMissing     = 41002
	CodeSecretMissing    = 41004
	CodeWorkUserInvalid  = 81013 // WeCom: no valid recipient
	CodeWorkUserNotFound = 60111 // WeCom: userid not found
)

// APIError is an answer with a non-zero errcode.
type APIError struct {
	API  string // which call, for logs: "custom/send", "stable_token"…
	Code int64
	Msg  string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("wechat %s: errcode %d: %s", e.API, e.Code, e.Msg)
}

// HTTPError is an answer with a status other than 200.
type HTTPError struct {
	API    string
	Status int
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("wechat %s: HTTP %d %s", e.API, e.Status, http.StatusText(e.Status))
}

// Transient reports whether retrying may help (5xx, 429, 408).
func (e *HTTPError) Transient() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// errcodeInText finds the errcode in the library's fmt.Errorf strings,
// such as "get stable access_token error : errcode=40013 , errormsg=…".
var errcodeInText = regexp.MustCompile(`errcode\s*=\s*(-?[0-9]{1,9})\b`)

// Code returns the errcode err carries: an *APIError, the library's
// *util.CommonError, or one of the library's errors that only say
// "errcode=N" in their text. ok is false when there is none.
func Code(err error) (code int64, ok bool) {
	if err == nil {
		return 0, false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code, true
	}
	var ce *util.CommonError
	if errors.As(err, &ce) {
		return ce.ErrCode, true
	}
	if m := errcodeInText.FindStringSubmatch(err.Error()); m != nil {
		if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
			return n, true
		}
	}
	return 0, false
}

// TokenRejected reports whether err says the access token is no longer
// good (40001, 40014, 42001): the cached token should be dropped and the
// call tried once more with a fresh one.
func TokenRejected(err error) bool {
	code, ok := Code(err)
	return ok && (code == CodeInvalidToken || code == CodeInvalidToken2 || code == CodeTokenExpired)
}

// CheckCode turns a decoded answer's errcode into an error (nil for 0).
func CheckCode(api string, ce util.CommonError) error {
	if ce.ErrCode == 0 {
		return nil
	}
	return &APIError{API: api, Code: ce.ErrCode, Msg: ce.ErrMsg}
}
