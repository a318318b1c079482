//go:build linux || darwin

package main

import (
	"slices"
	"strings"
	"testing"
)

// editorOnScreen is a lineEditor drawing on a screenModel, prompt shown, as at a terminal.
func editorOnScreen() (*lineEditor, *screenModel) {
	scr := &screenModel{}
	e := &lineEditor{out: scr}
	e.start()
	return e, scr
}

// typeKeys feeds keys to the editor as one read, expecting it to keep reading.
func typeKeys(t *testing.T, e *lineEditor, keys string) string {
	t.Helper()
	send, asked := e.typed([]byte(keys))
	if asked != keepTyping {
		t.Fatalf("typing %q: the editor asked %v, want to keep typing", keys, asked)
	}
	return string(send)
}

func checkScreen(t *testing.T, scr *screenModel, want ...string) {
	t.Helper()
	if got := scr.text(); !slices.Equal(got, want) || len(scr.unknown) > 0 {
		t.Fatalf("screen:\n%s\nwant:\n%s\n(escape sequences not understood: %q)", strings.Join(got, "\n"), strings.Join(want, "\n"), scr.unknown)
	}
	if !scr.cursorAtEnd() {
		t.Fatalf("cursor at column %d of %q, want it after the last character", scr.col, scr.text()[scr.row])
	}
}

func TestEditorEchoesAndSendsWholeLines(t *testing.T) {
	e, scr := editorOnScreen()
	checkScreen(t, scr, "> ")
	if send := typeKeys(t, e, "hel"); send != "" {
		t.Fatalf("sent %q before Enter", send)
	}
	checkScreen(t, scr, "> hel")
	if send := typeKeys(t, e, "lo\r"); send != "hello\n" {
		t.Fatalf("sent %q, want %q", send, "hello\n")
	}
	checkScreen(t, scr, "> hello", "> ")
	if send := typeKeys(t, e, "a\nb\r"); send != "a\nb\n" { // pasted lines: each one goes
		t.Fatalf("sent %q, want %q", send, "a\nb\n")
	}
}

// The student's bug: the room's line landed in the middle of the typing. It goes above it now.
func TestEditorDrawsTheRoomAboveTheTyping(t *testing.T) {
	e, scr := editorOnScreen()
	typeKeys(t, e, "I am typing half a li")
	e.show([]byte("bob: interrupting you\n"))
	checkScreen(t, scr, "bob: interrupting you", "> I am typing half a li")
	e.show([]byte("alice: me t")) // half a line from the room waits for the rest
	checkScreen(t, scr, "bob: interrupting you", "> I am typing half a li")
	e.show([]byte("oo\ncarol: and me\n"))
	checkScreen(t, scr, "bob: interrupting you", "alice: me too", "carol: and me", "> I am typing half a li")
	if send := typeKeys(t, e, "ne\r"); send != "I am typing half a line\n" {
		t.Fatalf("sent %q", send)
	}
}

func TestEditorBackspaceErasesOneCharacterOfAnyLength(t *testing.T) {
	e, scr := editorOnScreen()
	typeKeys(t, e, "café ☕")
	typeKeys(t, e, "\x7f") // DEL: the Backspace key of most terminals; ☕ is three bytes
	checkScreen(t, scr, "> café ")
	typeKeys(t, e, "\x7f\b") // and ^H, the Backspace key of some
	checkScreen(t, scr, "> caf")
	typeKeys(t, e, "\x7f\x7f\x7f\x7f") // one more than there is
	checkScreen(t, scr, "> ")
	typeKeys(t, e, "caf\xc3") // é cut in two by the reads
	typeKeys(t, e, "\xa9!")
	checkScreen(t, scr, "> café!")
	if send := typeKeys(t, e, "\x7f\x7f\r"); send != "caf\n" {
		t.Fatalf("sent %q, want %q", send, "caf\n")
	}
}

func TestEditorCtrlUClearsTheLine(t *testing.T) {
	e, scr := editorOnScreen()
	typeKeys(t, e, "oops, not that")
	typeKeys(t, e, "\x15")
	checkScreen(t, scr, "> ")
	if send := typeKeys(t, e, "this\r"); send != "this\n" {
		t.Fatalf("sent %q, want %q", send, "this\n")
	}
}

// Ctrl-D ends the input on an empty line only (as in a shell); the keys after it are not read.
func TestEditorCtrlDOnAnEmptyLineEndsTheInput(t *testing.T) {
	e, _ := editorOnScreen()
	send, asked := e.typed([]byte("x\x04y\r\x04z"))
	if string(send) != "xy\n" || asked != endOfInput {
		t.Fatalf("sent %q and asked %v, want %q and end of input", send, asked, "xy\n")
	}
}

func TestEditorCtrlCLeavesAtOnce(t *testing.T) {
	e, _ := editorOnScreen()
	send, asked := e.typed([]byte("sent\rnot sent\x03more"))
	if string(send) != "sent\n" || asked != leaveNow {
		t.Fatalf("sent %q and asked %v, want %q and leave now", send, asked, "sent\n")
	}
}

// Arrow and function keys send escape sequences: they must not end up in the line as "[A".
func TestEditorIgnoresArrowKeys(t *testing.T) {
	e, scr := editorOnScreen()
	typeKeys(t, e, "a\x1b[Ab\x1bOCc\x1b[1;5Dd\x1b")
	typeKeys(t, e, "[B\te") // a sequence cut by the reads; a tab, another control key
	checkScreen(t, scr, "> abcde")
}

func TestEditorShowsAVeryLongRoomLineWithoutWaiting(t *testing.T) {
	e, scr := editorOnScreen()
	typeKeys(t, e, "hi")
	long := strings.Repeat("x", maxHeldBack)
	e.show([]byte(long))
	checkScreen(t, scr, long, "> hi")
}

// At the end the prompt goes (what it holds was never sent) and a room line still held back is shown.
func TestEditorCloseShowsTheRestOfTheRoom(t *testing.T) {
	e, scr := editorOnScreen()
	typeKeys(t, e, "unsent")
	e.show([]byte("* the server is stopping"))
	e.close()
	checkScreen(t, scr, "* the server is stopping", "")
}
