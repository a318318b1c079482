//go:build linux

package main

// The chat room's protocol, apart from any socket: how bytes become lines, lines become commands, and
// what a name and a relayed line may hold. main.go moves bytes; this file says what they mean.

import (
	"bytes"
	"strings"
	"unicode"
)

// framer cuts the bytes one member sends into lines. TCP delivers a stream, not messages: a read
// returns whatever has arrived, part of a line or several lines (the seed relayed each recv as it
// came, B14). The framer keeps the unfinished end of a line between reads, at most max bytes of it:
// a longer line is refused as soon as it is too long, and skipped up to its newline, so a member who
// never sends a newline cannot make the server hold more.
type framer struct {
	max      int    // longest line accepted, in bytes, not counting its "\n" or "\r\n"
	partial  []byte // the line begun and not yet ended
	skipping bool   // inside a refused line: drop bytes up to its newline
}

// A frame is what the framer found: a whole line, without its "\n" (or "\r\n"), or the news that a
// line was too long and is being skipped.
type frame struct {
	line    string
	tooLong bool
}

// feed takes the bytes of one read and returns the frames they complete, in order.
func (f *framer) feed(p []byte) []frame {
	var frames []frame
	for len(p) > 0 {
		piece, rest, ended := bytes.Cut(p, []byte("\n"))
		p = rest
		if f.skipping {
			f.skipping = !ended // a refused line ends at its newline, and the next one is read as usual
			continue
		}
		if lineLen(f.partial, piece) > f.max {
			frames = append(frames, frame{tooLong: true})
			f.partial = f.partial[:0]
			f.skipping = !ended
			continue
		}
		f.partial = append(f.partial, piece...)
		if ended {
			frames = append(frames, frame{line: string(bytes.TrimSuffix(f.partial, []byte("\r")))})
			f.partial = f.partial[:0]
		}
	}
	return frames
}

// lineLen is the length of the line a+b without a final "\r": the "\r" of a "\r\n" is not content.
func lineLen(a, b []byte) int {
	n, last := len(a)+len(b), byte(0)
	if len(b) > 0 {
		last = b[len(b)-1]
	} else if len(a) > 0 {
		last = a[len(a)-1]
	}
	if last == '\r' {
		n--
	}
	return n
}

// rest returns the unfinished last line when the stream ends (EOF): "hello" sent without a newline
// is still a line. ok is false when there is none.
func (f *framer) rest() (line string, ok bool) {
	if f.skipping || len(f.partial) == 0 {
		return "", false
	}
	line = string(bytes.TrimSuffix(f.partial, []byte("\r")))
	f.partial = f.partial[:0]
	return line, true
}

// clean makes a line safe to show on other members' terminals: control characters other than tab
// are removed, so nobody can send escape sequences (ESC [ 2 J clears a screen) or a carriage return
// that overwrites what others see; so are the invisible format characters (Unicode category Cf:
// bidi overrides such as U+202E, zero-width spaces, U+FEFF), which let one member make another's line
// read differently on screen, and the line and paragraph separators U+2028 and U+2029; bytes that are
// not UTF-8 become U+FFFD. What is left is text.
func clean(line string) string {
	var b strings.Builder
	for _, r := range line { // ranging over a string yields U+FFFD for each invalid byte
		if unicode.IsControl(r) && r != '\t' || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
			continue // C0, DEL and C1 (U+0080..U+009F, where CSI lives), format characters, separators
		}
		b.WriteRune(r)
	}
	return b.String()
}

// maxName is the longest name, in bytes.
const maxName = 16

// validName reports whether s can be a member's name: 1 to 16 ASCII letters, digits, "_" or "-",
// starting with a letter. So a name never looks like a notice ("* ...") or holds a space.
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '_' || c == '-')) {
			return false
		}
	}
	return true
}

// A command is what one line asks for: verb "say" (an ordinary line, for everyone), "nick", "who",
// "msg" (to one member), "help" or "quit".
type command struct {
	verb string
	name string // /nick's new name, /msg's recipient
	text string // what to say, for "say" and "msg"
}

const help = "commands: /nick NAME, /who, /msg NAME TEXT, /quit"

// parseCommand reads one cleaned line. A line that does not start with "/" is something to say. For
// a bad command it returns the reply for the sender instead (problem), and cmd is empty.
func parseCommand(line string) (cmd command, problem string) {
	if !strings.HasPrefix(line, "/") {
		return command{verb: "say", text: line}, ""
	}
	verb, args := splitWord(line)
	switch strings.ToLower(verb) { // /NICK is /nick: names are not case-sensitive either

	case "/nick":
		name, more := splitWord(args)
		if name == "" || more != "" {
			return command{}, "usage: /nick NAME"
		}
		if !validName(name) {
			return command{}, "a name is 1 to 16 letters, digits, _ or -, starting with a letter"
		}
		return command{verb: "nick", name: name}, ""
	case "/who":
		if args != "" {
			return command{}, "usage: /who"
		}
		return command{verb: "who"}, ""
	case "/msg":
		name, text := splitWord(args)
		if name == "" || text == "" {
			return command{}, "usage: /msg NAME TEXT"
		}
		return command{verb: "msg", name: name, text: text}, ""
	case "/quit":
		return command{verb: "quit"}, "" // anything after /quit is ignored, as IRC users expect
	case "/help":
		return command{verb: "help"}, ""
	}
	return command{}, "unknown command " + verb + "; " + help
}

// splitWord returns the first word of s and the rest, both without surrounding white space.
func splitWord(s string) (word, rest string) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}
