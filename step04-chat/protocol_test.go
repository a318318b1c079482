package main

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// feedAll feeds the framer the chunks in order and collects the frames.
func feedAll(f *framer, chunks ...string) []frame {
	var got []frame
	for _, c := range chunks {
		got = append(got, f.feed([]byte(c))...)
	}
	return got
}

func lines(ss ...string) []frame {
	var fs []frame
	for _, s := range ss {
		if s == "TOO LONG" {
			fs = append(fs, frame{tooLong: true})
		} else {
			fs = append(fs, frame{line: s})
		}
	}
	return fs
}

// B14: a line split over reads is joined, several lines in one read are each found.
func TestB14_FramerJoinsAndSplits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		want   []frame
		rest   string
	}{
		{"one line", []string{"hello\n"}, lines("hello"), ""},
		{"split over reads", []string{"hel", "lo wor", "ld\n"}, lines("hello world"), ""},
		{"two in one read", []string{"one\ntwo\n"}, lines("one", "two"), ""},
		{"merged and split", []string{"one\ntw", "o\nthr"}, lines("one", "two"), "thr"},
		{"CRLF", []string{"dos\r\n", "split\r", "\n"}, lines("dos", "split"), ""},
		{"only one CR dropped", []string{"a\r\r\n"}, lines("a\r"), ""},
		{"empty lines", []string{"\n\r\n\n"}, lines("", "", ""), ""},
		{"newline byte by byte", []string{"a", "b", "\n"}, lines("ab"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &framer{max: 1024}
			if d := cmp.Diff(tc.want, feedAll(f, tc.chunks...), cmp.AllowUnexported(frame{})); d != "" {
				t.Errorf("frames (-want +got):\n%s", d)
			}
			rest, ok := f.rest()
			if rest != tc.rest || ok != (tc.rest != "") {
				t.Errorf("rest = %q, %v; want %q", rest, ok, tc.rest)
			}
		})
	}
}

// An over-long line is refused once, as soon as it is too long, skipped up to its newline, and the
// next line is read as usual; the framer never holds more than max+1 bytes.
func TestFramerRefusesOverLongLines(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		want   []frame
	}{
		{"exactly max", []string{"12345\n"}, lines("12345")},
		{"exactly max with CRLF", []string{"12345\r", "\n"}, lines("12345")},
		{"one over, refused at the newline", []string{"123456\n", "ok\n"}, lines("TOO LONG", "ok")},
		{"refused before its newline", []string{"1234567890", "more", "\nok\n"}, lines("TOO LONG", "ok")},
		{"refused once over many reads", []string{"123456", "7", "8", "9\n"}, lines("TOO LONG")},
		{"CR inside is content", []string{"12345\r6\n"}, lines("TOO LONG")},
		{"next line in the same read", []string{"1234567\nab\n"}, lines("TOO LONG", "ab")},
		{"two long lines", []string{"1234567\n1234567\nx\n"}, lines("TOO LONG", "TOO LONG", "x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &framer{max: 5}
			var got []frame
			for _, c := range tc.chunks {
				got = append(got, f.feed([]byte(c))...)
				if len(f.partial) > f.max+1 {
					t.Fatalf("the framer holds %d bytes, more than max+1 = %d", len(f.partial), f.max+1)
				}
			}
			if d := cmp.Diff(tc.want, got, cmp.AllowUnexported(frame{})); d != "" {
				t.Errorf("frames (-want +got):\n%s", d)
			}
		})
	}
}

// A refused line that never ends leaves nothing for EOF.
func TestFramerRestAfterRefusal(t *testing.T) {
	f := &framer{max: 3}
	f.feed([]byte("toolong"))
	if line, ok := f.rest(); ok {
		t.Errorf("rest = %q, want none: the line was refused", line)
	}
}

// referenceFrames is the framer's specification, on the whole input at once: split on "\n", drop one
// final "\r" per line, refuse lines longer than max; the last piece, if not empty, is the unfinished
// line (or refused already, if it is too long).
func referenceFrames(data string, max int) (frames []frame, rest string, ok bool) {
	pieces := strings.Split(data, "\n")
	for i, p := range pieces {
		line := strings.TrimSuffix(p, "\r")
		switch {
		case len(line) > max:
			frames = append(frames, frame{tooLong: true})
		case i < len(pieces)-1:
			frames = append(frames, frame{line: line})
		case p != "":
			rest, ok = line, true
		}
	}
	return frames, rest, ok
}

// FuzzFramer feeds the framer random bytes cut into random reads and checks it against
// referenceFrames: however TCP splits the stream, the lines are the same.
func FuzzFramer(f *testing.F) {
	f.Add([]byte("hello\nworld\n"), []byte{3}, uint8(1024&0xff))
	f.Add([]byte("one\r\ntwo\r\nthr"), []byte{1, 2, 5}, uint8(3))
	f.Add([]byte("0123456789\nab\n"), []byte{4}, uint8(5))
	f.Add([]byte("12345\r\n123456\r\n\r\n"), []byte{6, 1}, uint8(5))
	f.Add([]byte("a\rb\r\r\n\n\xff\x00\n"), []byte{0, 1}, uint8(2))
	f.Fuzz(func(t *testing.T, data, cuts []byte, max uint8) {
		fr := &framer{max: int(max%40) + 1}
		var got []frame
		for i, p := 0, data; len(p) > 0; i++ {
			n := len(p)
			if len(cuts) > 0 {
				n = min(n, int(cuts[i%len(cuts)])%17+1)
			}
			got = append(got, fr.feed(p[:n])...)
			p = p[n:]
			if len(fr.partial) > fr.max+1 {
				t.Fatalf("the framer holds %d bytes, more than max+1 = %d", len(fr.partial), fr.max+1)
			}
		}
		want, wantRest, wantOK := referenceFrames(string(data), fr.max)
		if d := cmp.Diff(want, got, cmp.AllowUnexported(frame{})); d != "" {
			t.Fatalf("max %d, frames (-want +got):\n%s", fr.max, d)
		}
		if rest, ok := fr.rest(); rest != wantRest || ok != wantOK {
			t.Fatalf("rest = %q, %v; want %q, %v", rest, ok, wantRest, wantOK)
		}
	})
}

// B15's lesson, for text: what is relayed is text a terminal shows as text, whatever bytes came in.
func TestCleanRemovesControlsAndBadBytes(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":                "plain text",
		"tab\tstays":                "tab\tstays",
		"\x1b[2Jcleared":            "[2Jcleared",
		"bell\a and nul\x00":        "bell and nul",
		"over\rwrite":               "overwrite",
		"del\x7f":                   "del",
		"c1 csi \u009b31m":          "c1 csi 31m",
		"bad \xff\xfe bytes":        "bad \ufffd\ufffd bytes",
		"cut rune \xe4\xb8":         "cut rune \ufffd\ufffd",
		"中文 and émoji 🙂":            "中文 and émoji 🙂",
		"\u202eRTL override goes":   "RTL override goes",
		"bidi \u2066isolate\u2069":  "bidi isolate",
		"zero\u200bwidth \ufeffbom": "zerowidth bom",
		"line\u2028para\u2029sep":   "lineparasep",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzClean: the result is valid UTF-8 with no control character but tab, no format character (Cf)
// and no line or paragraph separator, and cleaning twice
// changes nothing.
func FuzzClean(f *testing.F) {
	f.Add("hello\x1b[31m red \xff\x00\t")
	f.Add("\u0085\u009b\u200b")
	f.Fuzz(func(t *testing.T, s string) {
		c := clean(s)
		if !utf8.ValidString(c) {
			t.Fatalf("clean(%q) = %q: not UTF-8", s, c)
		}
		for _, r := range c {
			if unicode.IsControl(r) && r != '\t' || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029' {
				t.Fatalf("clean(%q) = %q: holds control or invisible %U", s, c, r)
			}
		}
		if cc := clean(c); cc != c {
			t.Fatalf("clean is not idempotent: %q then %q", c, cc)
		}
	})
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "alice", "Bob_2", "x-y", "abcdefghijklmnop"} {
		if !validName(ok) {
			t.Errorf("validName(%q) = false, want true", ok)
		}
	}
	for _, bad := range []string{"", "2pac", "_x", "-x", "al ice", "abcdefghijklmnopq", "é", "a*", "*", "a\x00"} {
		if validName(bad) {
			t.Errorf("validName(%q) = true, want false", bad)
		}
	}
}

func TestParseCommand(t *testing.T) {
	for _, tc := range []struct {
		line    string
		want    command
		problem string
	}{
		{"hello all", command{verb: "say", text: "hello all"}, ""},
		{" /nick x", command{verb: "say", text: " /nick x"}, ""},
		{"/nick alice", command{verb: "nick", name: "alice"}, ""},
		{"/nick  alice\t", command{verb: "nick", name: "alice"}, ""},
		{"/nick", command{}, "usage: /nick NAME"},
		{"/nick al ice", command{}, "usage: /nick NAME"},
		{"/nick 9lives", command{}, "a name is 1 to 16 letters, digits, _ or -, starting with a letter"},
		{"/who", command{verb: "who"}, ""},
		{"/who is there", command{}, "usage: /who"},
		{"/msg bob hi  there ", command{verb: "msg", name: "bob", text: "hi  there"}, ""},
		{"/msg bob", command{}, "usage: /msg NAME TEXT"},
		{"/msg", command{}, "usage: /msg NAME TEXT"},
		{"/quit", command{verb: "quit"}, ""},
		{"/quit see you", command{verb: "quit"}, ""},
		{"/help", command{verb: "help"}, ""},
		{"/dance", command{}, "unknown command /dance; " + help},
		{"/", command{}, "unknown command /; " + help},
		{"/NICK bob", command{verb: "nick", name: "bob"}, ""},
		{"/Msg bob hi", command{verb: "msg", name: "bob", text: "hi"}, ""},
	} {
		got, problem := parseCommand(tc.line)
		if got != tc.want || problem != tc.problem {
			t.Errorf("parseCommand(%q) = %+v, %q; want %+v, %q", tc.line, got, problem, tc.want, tc.problem)
		}
	}
}

// FuzzCommand: every line is either a command with well-formed arguments or a one-line reply to its
// sender, never both, never neither, and never a panic.
func FuzzCommand(f *testing.F) {
	for _, s := range []string{"hi", "/nick alice", "/nick", "/who", "/who x", "/msg bob hi there",
		"/msg", "/quit bye", "/help", "/x", "/", "/msg \u3000bob\u3000hi", "/nick a\u00a0b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		line = clean(line) // the server parses cleaned lines only
		cmd, problem := parseCommand(line)
		if (cmd.verb == "") == (problem == "") {
			t.Fatalf("parseCommand(%q) = %+v, %q: want exactly one of a command and a problem", line, cmd, problem)
		}
		if strings.ContainsAny(problem, "\n\r") {
			t.Fatalf("problem %q is not one line", problem)
		}
		switch cmd.verb {
		case "say":
			if cmd.text != line || strings.HasPrefix(line, "/") {
				t.Fatalf("parseCommand(%q): say %q", line, cmd.text)
			}
		case "nick":
			if !validName(cmd.name) {
				t.Fatalf("parseCommand(%q): nick to invalid name %q", line, cmd.name)
			}
		case "msg":
			if cmd.name == "" || cmd.text == "" || strings.IndexFunc(cmd.name, unicode.IsSpace) >= 0 ||
				strings.TrimSpace(cmd.text) != cmd.text {
				t.Fatalf("parseCommand(%q): msg %q %q", line, cmd.name, cmd.text)
			}
		case "who", "help", "quit", "":
		default:
			t.Fatalf("parseCommand(%q): unknown verb %q", line, cmd.verb)
		}
	})
}
