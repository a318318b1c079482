package scenario_test

import (
	"strings"
	"testing"

	. "muxlab/tracing/scenario"
	_ "muxlab/tracing/tracetest" // for -update, which go test ./... -update passes to every package
)

func TestParseEveryAction(t *testing.T) {
	sc, err := Parse("all.txt", `
# a comment
args -sndbuf 4096
connect c1 rcvbuf=4096
connect c2 unnoticed   # trailing comment
send c1 "a \"quoted\" # not a comment\n"
send c1 300 bytes
expect c1 "x"
expect c1 300 bytes
expect-line c1 "hello"
expect-nothing c2 300ms
expect-nothing c2
expect-eof c2
shutdown c1
reset c2
close c1
stop-reading c1
signal TERM
expect-exit 0
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(sc.Args, " "); got != "-sndbuf 4096" {
		t.Errorf("args = %q", got)
	}
	var got []string
	for _, st := range sc.Steps {
		got = append(got, st.String())
	}
	want := []string{
		"connect c1 rcvbuf=4096", "connect c2 unnoticed", `send c1 "a \"quoted\" # not a comment\n"`,
		"send c1 300 bytes", `expect c1 "x"`, "expect c1 300 bytes", `expect-line c1 "hello"`,
		"expect-nothing c2 300ms", "expect-nothing c2 200ms", "expect-eof c2", "shutdown c1", "reset c2",
		"close c1", "stop-reading c1", "signal TERM", "expect-exit 0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("parsed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if sc.Steps[1].ReachesServer() != true || sc.Steps[4].ReachesServer() {
		t.Error("ReachesServer: connect reaches the server, expect does not")
	}
	if sc.Steps[0].Line != 4 {
		t.Errorf("first step on line %d, want 4", sc.Steps[0].Line)
	}
}

// Every mistake is reported with the file name and line number, and says what was expected.
func TestParseErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"connect c1\nsend c1 123", `s.txt:2: send data 123: not a Go string literal`},
		{"connect c1\nsend c1", `s.txt:2: usage: send CLIENT "text" | send CLIENT N bytes`},
		{"connect c1\nsend c1 \"open", "s.txt:2: unterminated string"},
		{"dance c1", `s.txt:1: unknown action "dance"`},
		{"connect 1c", `s.txt:1: client name "1c"`},
		{"connect c1\nexpect c1 0 bytes", `s.txt:2: expect "0" bytes: want a count`},
		{"connect c1\nexpect-nothing c1 soon", `s.txt:2: duration "soon"`},
		{"connect c1\nexpect c1 \"x\" unnoticed", `s.txt:2: expect never reaches the server`},
		{"connect c1\nargs -x", "s.txt:2: args must come before the first action"},
		{"signal HUP", `s.txt:1: signal "HUP": want INT or TERM`},
		{"# nothing", "s.txt: no actions"},
		{"connect c1 rcvbuf=big", `s.txt:1: connect option "rcvbuf=big"`},
		{"connect c1\nexpect-line c1 \"a\\nb\"", "s.txt:2: expect-line text holds a newline"},
	} {
		_, err := Parse("s.txt", tc.text)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error starting %q", tc.text, err, tc.want)
		}
	}
}

func TestPatternContinues(t *testing.T) {
	whole := Pattern(0, 200)
	if string(Pattern(0, 70))+string(Pattern(70, 130)) != string(whole) {
		t.Fatal("two pieces of the pattern do not join into the whole")
	}
	if whole[63] != '\n' {
		t.Fatal("the pattern is made of 64-byte lines")
	}
}

// FuzzParse: no input makes the parser panic; an accepted scenario's steps render and parse back to
// the same steps (String is what transcripts show, so it must say exactly what was parsed).
func FuzzParse(f *testing.F) {
	f.Add("connect c1\nsend c1 \"123\\n\"\nexpect c1 \"123\\n\"\nclose c1")
	f.Add("args -sndbuf 4096\nconnect c1 rcvbuf=4096\nsend c1 30000 bytes\nexpect-nothing c2 300ms")
	f.Add("send c1 \"\\\"\" unnoticed # x")
	f.Add("signal TERM\nexpect-exit 0")
	f.Fuzz(func(t *testing.T, text string) {
		sc, err := Parse("fuzz.txt", text)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.txt") {
				t.Fatalf("error without the file name: %v", err)
			}
			return
		}
		var lines []string
		for _, st := range sc.Steps {
			lines = append(lines, st.String())
		}
		again, err := Parse("again.txt", strings.Join(lines, "\n"))
		if err != nil {
			t.Fatalf("rendered steps do not parse: %v\n%s", err, strings.Join(lines, "\n"))
		}
		for i, st := range again.Steps {
			if st.String() != lines[i] {
				t.Fatalf("step %d: %q became %q", i, lines[i], st.String())
			}
		}
	})
}
