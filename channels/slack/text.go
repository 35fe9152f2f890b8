package slack

import (
	"strings"
	"unicode/utf8"
)

// Slack's message text is "mrkdwn": &, < and > are escaped, and <…> marks
// links, mentions and channel references. These helpers convert both ways.

var escaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// escape makes customer or agent text safe to post: nothing in it can
// become a link, a mention or an @channel.
func escape(s string) string { return escaper.Replace(s) }

var unescaper = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&")

// PlainText turns the text of a Slack message into what a customer should
// read: <https://x|label> becomes "label (https://x)", a bare <https://x>
// becomes the URL, <mailto:a@b|a@b> the address, <@U123|name> "@name"
// (or "@U123"), <#C123|general> "#general", <!here> "@here", and &amp;,
// &lt; and &gt; become &, < and >.
func PlainText(s string) string {
	if !strings.ContainsAny(s, "<&") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			b.WriteString(unescaper.Replace(s))
			return b.String()
		}
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			b.WriteString(unescaper.Replace(s))
			return b.String()
		}
		b.WriteString(unescaper.Replace(s[:i]))
		b.WriteString(entity(s[i+1 : i+j]))
		s = s[i+j+1:]
	}
}

// entity renders the inside of one <…>.
func entity(in string) string {
	target, label, hasLabel := strings.Cut(in, "|")
	target, label = unescaper.Replace(target), unescaper.Replace(label)
	switch {
	case strings.HasPrefix(target, "@"): // a user
		if hasLabel && label != "" {
			return "@" + strings.TrimPrefix(label, "@")
		}
		return target
	case strings.HasPrefix(target, "#"): // a channel
		if hasLabel && label != "" {
			return "#" + strings.TrimPrefix(label, "#")
		}
		return target
	case strings.HasPrefix(target, "!"): // <!here>, <!channel>, <!subteam^ID|@team>, <!date^…|fallback>
		if hasLabel && label != "" {
			return label
		}
		name, _, _ := strings.Cut(target[1:], "^")
		return "@" + name
	case strings.HasPrefix(target, "mailto:"):
		if hasLabel && label != "" {
			return label
		}
		return strings.TrimPrefix(target, "mailto:")
	}
	if !hasLabel || label == "" || label == target || "http://"+label == target || "https://"+label == target {
		return target
	}
	return label + " (" + target + ")"
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = " … (cut; the console has all of it)"
	n -= len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	n = max(n, 0)
	// Not inside an entity of escape's ("&amp;" cut to "&am").
	if amp := strings.LastIndexByte(s[:n], '&'); amp >= 0 && amp >= n-len("&amp;")+1 && !strings.Contains(s[amp:n], ";") {
		n = amp
	}
	return s[:n] + mark
}

// quote renders text as a Slack block quote.
func quote(text string) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i, l := range lines {
		lines[i] = "> " + l
	}
	return strings.Join(lines, "\n")
}
