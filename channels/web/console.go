package web

import (
	"embed"
	"io/fs"
	"net/http"
	"regexp"
)

// The agent console: plain HTML, CSS and JavaScript (channels/web/console/,
// no build step) embedded in the binary and served at /console/. It is a
// client of the REST API (docs/api.md) and of the agent stream
// (docs/protocol.md), nothing more: it holds no rule of its own.
//
// Its pages are served with a strict Content-Security-Policy: scripts and
// styles only from these files (no inline script, no eval), connections
// only back to this server (its REST API and WebSocket), images only from
// here and from blob: URLs (media the console fetched with the agent's
// token), and no framing. Message text is only ever put in the page as
// text (textContent), so whatever a customer writes stays text.

//go:embed console
var consoleFiles embed.FS

// Routes.
const (
	pathConsole = "/console/"
)

// consoleHost is a Host header that may go into the CSP's connect-src:
// a host name or IP literal and an optional port, nothing that could end
// the directive.
var consoleHost = regexp.MustCompile(`^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$`)

// consoleCSP is the console's Content-Security-Policy for a request to
// host. 'self' covers same-origin WebSockets in CSP 3; the explicit ws:
// and wss: sources are for browsers that predate it.
func consoleCSP(host string) string {
	connect := "connect-src 'self'"
	if consoleHost.MatchString(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; " +
		connect + "; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; " +
		"frame-ancestors 'none'"
}

// mountConsole serves the console at /console/, and sends / there.
func (c *Channel) mountConsole(mux *http.ServeMux) {
	sub, err := fs.Sub(consoleFiles, "console")
	if err != nil {
		panic("web: embedded console missing: " + err.Error()) // a build without the files
	}
	files := http.StripPrefix(pathConsole, http.FileServerFS(sub))
	mux.HandleFunc("GET "+pathConsole, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", consoleCSP(r.Host))
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
		// Small files, revalidated on every load, so that an upgraded kefu
		// serves its new console at once.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, pathConsole, http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, pathConsole, http.StatusFound)
	})
}
