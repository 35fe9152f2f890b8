// Package wxapi is what kefu's WeChat Official Account channel
// (channels/wechat) and Work WeChat channel (channels/wecom) share on top of
// github.com/silenceper/wechat/v2: the one process-wide HTTP hook that sends
// every request for WeChat's API hosts to the configured api_base, the
// access-token cache that can be dropped when WeChat says a token is no
// longer valid, errcode handling, the callback signature and AES helpers,
// and small request helpers that honour a context.
//
// # Why one shared hook
//
// The library hard-codes https://api.weixin.qq.com and
// https://qyapi.weixin.qq.com and sends everything through two process
// globals: util.DefaultHTTPClient and util.SetURIModifier. If each channel
// instance set those itself, the last one built would capture every other
// instance's traffic (a wecom instance would send the wechat instance's
// token requests to its own api_base). So this package installs ONE client
// as util.DefaultHTTPClient, once, whose transport rewrites a request by its
// original host: requests for api.weixin.qq.com go to the api_base of the
// wechat instances, requests for qyapi.weixin.qq.com to the api_base of the
// wecom instances. The URI modifier is left unset: the transport sees every
// request the library makes (including the ones the modifier misses, such as
// PostJSONWithRespContentType), and kefu's own requests use Client() too.
//
// A consequence: all instances of one type in a process share one api_base.
// Route refuses a second, different api_base for the same host while the
// first is in use, and the channel's factory reports it.
package wxapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/silenceper/wechat/v2/util"
)

// WeChat's API hosts, as the library and WeChat's documentation name them.
const (
	// OfficialAccountHost serves the Official Account API (tokens,
	// customer-service messages, media).
	OfficialAccountHost = "api.weixin.qq.com"
	// WorkHost serves the Work WeChat (WeCom) API.
	WorkHost = "qyapi.weixin.qq.com"
)

// ClientTimeout bounds any one request through Client, including the
// library's own requests that carry no context.
const ClientTimeout = 60 * time.Second

// ErrRouteConflict is returned by Route when the host already goes to a
// different api_base: two instances of one channel type in one process must
// share their api_base.
var ErrRouteConflict = errors.New("another instance of this channel type uses a different api_base; instances of one type must share api_base")

type route struct {
	base *url.URL
	refs int
}

var (
	installOnce sync.Once
	client      *http.Client

	mu     sync.RWMutex
	routes = map[string]*route{}
)

// Client returns the HTTP client every WeChat request goes through: the one
// installed as the library's util.DefaultHTTPClient. Requests for the API
// hosts are rewritten to their routes; others (a video's download URL) go
// out unchanged.
func Client() *http.Client {
	install()
	return client
}

// Installed reports whether the library still uses this package's client
// (something else in the process may have replaced util.DefaultHTTPClient).
func Installed() bool {
	install()
	return util.DefaultHTTPClient == client
}

func install() {
	installOnce.Do(func() {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// A new client rather than a change to the old one: the library's
		// default is http.DefaultClient itself, which is not ours to alter.
		client = &http.Client{Transport: &rewriter{next: tr}, Timeout: ClientTimeout}
		util.DefaultHTTPClient = client
	})
}

// Route sends requests for host (OfficialAccountHost or WorkHost) to base,
// an absolute http(s) URL whose path, if any, prefixes the API paths
// ("https://proxy.example.com/wechat" turns /cgi-bin/token into
// /wechat/cgi-bin/token). The route holds until every release returned for
// it has been called. It fails with ErrRouteConflict while host is routed
// to a different base.
func Route(host, base string) (release func(), err error) {
	u, err := ParseBase(base)
	if err != nil {
		return nil, err
	}
	host = strings.ToLower(host)
	install()
	mu.Lock()
	defer mu.Unlock()
	r := routes[host]
	switch {
	case r == nil:
		r = &route{base: u}
		routes[host] = r
	case r.base.String() != u.String():
		return nil, fmt.Errorf("%s is routed to %s, not %s: %w", host, r.base, u, ErrRouteConflict)
	}
	r.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			mu.Lock()
			defer mu.Unlock()
			r.refs--
			if r.refs == 0 && routes[host] == r {
				delete(routes, host)
			}
		})
	}, nil
}

// ParseBase checks an api_base: an absolute http or https URL without
// query or fragment. A trailing slash is dropped.
func ParseBase(base string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("api_base %q: must be an absolute http(s) URL without query", base)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// rewriter is the transport of Client.
type rewriter struct{ next http.RoundTripper }

func (t *rewriter) RoundTrip(req *http.Request) (*http.Response, error) {
	host := strings.ToLower(req.URL.Hostname())
	mu.RLock()
	r := routes[host]
	mu.RUnlock()
	if r == nil || req.URL.Scheme != "https" || (req.URL.Port() != "" && req.URL.Port() != "443") {
		return t.next.RoundTrip(req)
	}
	// A RoundTripper must not change the request it is given.
	out := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host = r.base.Scheme, r.base.Host
	u.Path = r.base.Path + req.URL.Path
	u.RawPath = ""
	out.URL = &u
	out.Host = ""
	return t.next.RoundTrip(out)
}
