package wecom

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Op is what an agent's text asks for.
type Op string

const (
	OpReply    Op = "reply"    // a plain reply: to the selected or only conversation
	OpAnswer   Op = "answer"   // "#123 text": answer 123 (and select it)
	OpSelect   Op = "select"   // "#123" alone: select 123
	OpOn       Op = "on"       // /on
	OpOff      Op = "off"      // /off
	OpList     Op = "list"     // /list
	OpTake     Op = "take"     // /take 123
	OpClose    Op = "close"    // /close [123]
	OpTransfer Op = "transfer" // /transfer 123 bob
	OpHelp     Op = "help"     // /help
	OpUsage    Op = "usage"    // a known command with bad arguments; Text says how to use it
	OpUnknown  Op = "unknown"  // "/something" else; Text is the word
	OpEmpty    Op = "empty"    // nothing but spaces
)

// Command is an agent's text, parsed.
type Command struct {
	Op   Op
	Conv int64  // the conversation named (#123, /take 123…); 0 when none
	Who  string // /transfer's target agent
	Text string // the reply (OpReply, OpAnswer), or a usage hint (OpUsage)
}

// Usage lines, also the /help text.
var usage = map[Op]string{
	OpTake:     "/take 123 — take conversation #123",
	OpClose:    "/close [123] — close #123 (or the conversation a plain reply would go to)",
	OpTransfer: "/transfer 123 bob — give #123 to bob (an agent's name or the part of their email before @; \"me\" is you)",
}

// numberEnds are the marks that may end a conversation number before its
// text, as a space does ("#123: text").
const numberEnds = ":：,，、"

// maxConvDigits bounds a conversation number.
const maxConvDigits = 15

// ParseCommand reads an agent's text message. Full-width "＃" and "／" (as
// Chinese keyboards type them) count as "#" and "/", and the ideographic
// space as a space. "#123" may be followed by its text after a space, a
// colon or a comma, or directly by a letter that is not ASCII ("#123好的");
// followed by an ASCII letter or digit it is a hashtag ("#12abc", plain
// text), and by other punctuation it is refused as unclear. A reply that
// must start with "/" or "#" can be sent as "#123 /text".
func ParseCommand(s string) Command {
	s = strings.TrimFunc(s, unicode.IsSpace)
	if s == "" {
		return Command{Op: OpEmpty}
	}
	switch {
	case strings.HasPrefix(s, "＃"):
		s = "#" + strings.TrimPrefix(s, "＃")
	case strings.HasPrefix(s, "／"):
		s = "/" + strings.TrimPrefix(s, "／")
	}
	switch s[0] {
	case '#':
		digits, rest := leadingDigits(s[1:])
		if digits == "" {
			return Command{Op: OpReply, Text: s} // "#hashtag": just text
		}
		switch r, _ := utf8.DecodeRuneInString(rest); {
		case rest == "" || unicode.IsSpace(r):
		case r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_'):
			return Command{Op: OpReply, Text: s} // "#12abc": a hashtag, just text
		case unicode.IsLetter(r):
			// "#123好的": Chinese is typed without a space after the number.
		case strings.ContainsRune(numberEnds, r):
			rest = rest[utf8.RuneLen(r):] // "#123: text", "#123，text"
		default:
			// "#1. text" may be a numbered list or an answer to #1: going
			// to either conversation could be the wrong one.
			return Command{Op: OpUsage, Text: "nothing was sent: write \"#" + digits + " text\" to answer #" + digits +
				", or begin the reply with something other than \"#" + digits + "\""}
		}
		n, ok := convNumber(digits)
		if !ok {
			return Command{Op: OpReply, Text: s}
		}
		text := strings.TrimFunc(rest, unicode.IsSpace)
		if text == "" {
			return Command{Op: OpSelect, Conv: n}
		}
		return Command{Op: OpAnswer, Conv: n, Text: text}
	case '/':
		return parseSlash(s[1:])
	}
	return Command{Op: OpReply, Text: s}
}

func parseSlash(s string) Command {
	fields := strings.FieldsFunc(s, unicode.IsSpace)
	if len(fields) == 0 {
		return Command{Op: OpUnknown, Text: "/"}
	}
	word, args := strings.ToLower(fields[0]), fields[1:]
	switch word {
	case "on", "off", "list", "help":
		if len(args) > 0 {
			return Command{Op: OpUsage, Text: "/" + word + " takes no arguments"}
		}
		return Command{Op: Op(word)}
	case "take":
		if len(args) != 1 {
			return Command{Op: OpUsage, Text: usage[OpTake]}
		}
		n, ok := convArg(args[0])
		if !ok {
			return Command{Op: OpUsage, Text: usage[OpTake]}
		}
		return Command{Op: OpTake, Conv: n}
	case "close":
		switch len(args) {
		case 0:
			return Command{Op: OpClose}
		case 1:
			if n, ok := convArg(args[0]); ok {
				return Command{Op: OpClose, Conv: n}
			}
		}
		return Command{Op: OpUsage, Text: usage[OpClose]}
	case "transfer":
		if len(args) != 2 {
			return Command{Op: OpUsage, Text: usage[OpTransfer]}
		}
		n, ok := convArg(args[0])
		if !ok || len(args[1]) > 254 {
			return Command{Op: OpUsage, Text: usage[OpTransfer]}
		}
		return Command{Op: OpTransfer, Conv: n, Who: args[1]}
	}
	if len(word) > 32 {
		word = word[:32]
	}
	return Command{Op: OpUnknown, Text: "/" + strings.ToValidUTF8(word, "")}
}

// convArg reads "123" or "#123" (or "＃123").
func convArg(s string) (int64, bool) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "＃"), "#")
	digits, rest := leadingDigits(s)
	if rest != "" {
		return 0, false
	}
	return convNumber(digits)
}

func convNumber(digits string) (int64, bool) {
	if digits == "" || len(digits) > maxConvDigits {
		return 0, false
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	return n, err == nil && n > 0
}

// leadingDigits splits s after its leading digits, returned in ASCII:
// full-width ones ("１２３", as a Chinese keyboard in full-width mode
// types them) count as theirs.
func leadingDigits(s string) (digits, rest string) {
	var b strings.Builder
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r >= '0' && r <= '9':
			b.WriteRune(r)
		case r >= '０' && r <= '９':
			b.WriteRune('0' + (r - '０'))
		default:
			return b.String(), s[i:]
		}
		i += size
	}
	return b.String(), ""
}

// helpText answers /help.
const helpText = `kefu commands:
#123 text — answer conversation #123 (and select it); also #123好的, #123: text
#123 — select #123: plain replies go there
text — a plain reply: to the conversation you selected, or to your only open one
/on — available: new conversations are assigned to you
/off — away: no new conversations
/list — your conversations and the queue
` + "/take 123 — take conversation #123\n" +
	"/close [123] — close #123 (or the one a plain reply would go to)\n" +
	"/transfer 123 bob — give #123 to bob (name, or email before @; \"me\" is you)\n" +
	"/help — this list\n" +
	"Images you send go to the conversation a plain reply would go to."
