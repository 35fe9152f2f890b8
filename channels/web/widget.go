package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"html/template"
	"net/http"
	"strings"
	"time"
)

// The embeddable visitor widget and the demo page.
//
// The widget is plain JavaScript (widget/widget.js, no build step) that a
// site embeds with one tag:
//
//	<script src="https://support.example.com/widget.js" async></script>
//
// It draws its launcher and panel inside a shadow root, so the host page's
// CSS neither reaches in nor is touched, and talks to this server with the
// protocol in docs/protocol.md. /demo is a page that embeds it, for trying
// both sides (the widget there, the console at /console/) in two tabs.

// Routes.
const (
	pathWidgetJS   = "/widget.js"
	pathDemo       = "/demo"
	pathDemoCSS    = "/widget/demo.css"
	demoConsoleURL = "/console/"
)

//go:embed widget
var widgetFiles embed.FS

// widgetAsset is an embedded file served as is, revalidated by its ETag.
type widgetAsset struct {
	body  []byte
	ctype string
	etag  string
}

func loadWidgetAsset(name, ctype string) widgetAsset {
	b, err := widgetFiles.ReadFile("widget/" + name)
	if err != nil {
		panic("web: embedded widget file missing: " + name) // a build without the files
	}
	sum := sha256.Sum256(b)
	return widgetAsset{body: b, ctype: ctype, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
}

var (
	widgetJS    = loadWidgetAsset("widget.js", "text/javascript; charset=utf-8")
	widgetDemo  = template.Must(template.ParseFS(widgetFiles, "widget/demo.html"))
	widgetDemoC = loadWidgetAsset("demo.css", "text/css; charset=utf-8")
)

// widgetMaxAge is how long browsers use widget.js before asking again (with
// its ETag, so asking is cheap): short enough that an upgrade of kefu
// reaches every embedding site within minutes.
const widgetMaxAge = "public, max-age=300"

// demoCSP allows the demo page what it uses and nothing else: its own
// script (the widget) and style sheet, the widget's connections back to this
// origin (CSP 3 'self' covers ws:/wss: to it), and images from blob URLs
// (media the widget fetched with the visitor token) and data URLs.
const demoCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// mountWidget registers the widget, the demo page and the visitor media
// endpoints (visitor_media.go) the widget uploads and downloads through.
func (c *Channel) mountWidget(mux *http.ServeMux) {
	c.rt.mountVisitorMedia(mux)
	mux.HandleFunc("GET "+pathWidgetJS, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Any site may load it; Cross-Origin-Resource-Policy lets pages
		// that require it (COEP) embed it too.
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
		serveWidgetAsset(w, r, widgetJS, widgetMaxAge)
	})
	mux.HandleFunc("GET "+pathDemoCSS, func(w http.ResponseWriter, r *http.Request) {
		serveWidgetAsset(w, r, widgetDemoC, widgetMaxAge)
	})
	mux.HandleFunc("GET "+pathDemo, c.serveWidgetDemo)
}

func serveWidgetAsset(w http.ResponseWriter, r *http.Request, a widgetAsset, cache string) {
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", cache)
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body)) // answers If-None-Match with 304
}

// demoPage is what demo.html is filled with.
type demoPage struct {
	Base      string // this server's URL, for the snippet to copy
	Console   string
	Lang      string // data-lang, or ""
	Transport string // data-transport, or ""
}

// serveWidgetDemo is GET /demo[?lang=zh|en][&transport=poll]: a page that embeds
// the widget with the one tag, and says how to try the agent's side.
func (c *Channel) serveWidgetDemo(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := demoPage{Base: c.widgetBaseURL(r), Console: demoConsoleURL}
	if l := q.Get("lang"); l == "zh" || l == "en" {
		p.Lang = l
	}
	if q.Get("transport") == "poll" {
		p.Transport = "poll"
	}
	var b bytes.Buffer
	if err := widgetDemo.Execute(&b, p); err != nil {
		c.log.Error("web: demo page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", demoCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write(b.Bytes())
}

// widgetBaseURL is this server's URL as visitors reach it: server.public_url, or
// else what the request says.
func (c *Channel) widgetBaseURL(r *http.Request) string {
	if u := strings.TrimSuffix(c.deps.PublicURL, "/"); u != "" {
		return u
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
