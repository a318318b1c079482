//go:build linux || darwin

package main

import (
	"bytes"
	"io"
	"unicode/utf8"
)

// The screen a lineEditor draws: lines from the room scroll up, and the bottom line is the prompt with
// what the person has typed so far.
const (
	prompt    = "> "
	clearLine = "\r\x1b[K" // back to column 0, then erase to the end of the line (ANSI EL)
)

// Keys a raw terminal sends as bytes.
const (
	ctrlC     = 0x03
	ctrlD     = 0x04
	backspace = 0x08
	ctrlU     = 0x15
	escape    = 0x1b
	del       = 0x7f // what most terminals send for the Backspace key
)

// maxHeldBack bounds the start of a room line kept back until its newline: past it, the line is shown
// anyway.
const maxHeldBack = 4096

// lineEditor keeps the line being typed, echoes it, and draws it again below each line from the room.
type lineEditor struct {
	out      io.Writer
	line     []byte // typed, not sent yet
	incoming []byte // the start of a room line whose newline has not arrived
	esc      escapeSkipper
}

// start draws the first prompt.
func (e *lineEditor) start() { io.WriteString(e.out, prompt) }

// typed edits the line with the keys in p and returns the finished lines (each with its "\n"). It
// stops at Ctrl-C or at Ctrl-D on an empty line, and says which.
func (e *lineEditor) typed(p []byte) (send []byte, asked request) {
	var echo bytes.Buffer
	defer func() { e.out.Write(echo.Bytes()) }() // one write per read: the screen never shows half a redraw
	for _, c := range p {
		switch {
		case e.esc.skip(c):
			// part of an arrow or function key: no meaning here
		case c == '\r' || c == '\n':
			send = append(send, e.line...)
			send = append(send, '\n')
			e.line = e.line[:0]
			echo.WriteString("\n" + prompt)
		case c == del || c == backspace:
			if len(e.line) > 0 {
				_, size := utf8.DecodeLastRune(e.line) // one rune, which may be several bytes
				e.line = e.line[:len(e.line)-size]
				e.redraw(&echo)
			}
		case c == ctrlU:
			e.line = e.line[:0]
			e.redraw(&echo)
		case c == ctrlC:
			return send, leaveNow
		case c == ctrlD && len(e.line) == 0:
			return send, endOfInput
		case c < ' ':
			// other control keys (and Ctrl-D after some text): ignored, as a shell would
		default:
			e.line = append(e.line, c)
			echo.WriteByte(c)
		}
	}
	return send, keepTyping
}

// redraw draws the bottom line again from the start: simpler than erasing one character, and right for
// characters of any width.
func (e *lineEditor) redraw(b *bytes.Buffer) {
	b.WriteString(clearLine + prompt)
	b.Write(e.line)
}

// show puts the room's complete lines above the line being typed. A line's start is held back until
// its newline arrives, because the prompt would be drawn after it on the same line.
func (e *lineEditor) show(p []byte) {
	e.incoming = append(e.incoming, p...)
	complete := bytes.LastIndexByte(e.incoming, '\n') + 1
	if complete == 0 && len(e.incoming) < maxHeldBack {
		return
	}
	var b bytes.Buffer
	b.WriteString(clearLine)
	if complete == 0 { // a very long line: show what came, and carry on below it
		b.Write(e.incoming)
		b.WriteString("\n")
		complete = len(e.incoming)
	} else {
		b.Write(e.incoming[:complete])
	}
	e.incoming = append(e.incoming[:0], e.incoming[complete:]...)
	b.WriteString(prompt)
	b.Write(e.line)
	e.out.Write(b.Bytes())
}

// close erases the prompt (what it holds was never sent) and shows a room line still held back.
func (e *lineEditor) close() {
	var b bytes.Buffer
	b.WriteString(clearLine)
	if len(e.incoming) > 0 {
		b.Write(e.incoming)
		b.WriteString("\n")
		e.incoming = e.incoming[:0]
	}
	e.out.Write(b.Bytes())
}

// escapeSkipper drops the escape sequences that arrow and function keys send (ESC [ A is the up arrow),
// which would otherwise appear in the line as "[A".
type escapeSkipper struct{ state escapeState }

type escapeState int

const (
	notInEscape escapeState = iota
	afterESC
	inCSI // ESC [, then bytes up to a final byte in @ to ~
	inSS3 // ESC O, then one byte
)

// skip says whether c belongs to an escape sequence.
func (s *escapeSkipper) skip(c byte) bool {
	switch s.state {
	case notInEscape:
		if c != escape {
			return false
		}
		s.state = afterESC
	case afterESC:
		switch c {
		case '[':
			s.state = inCSI
		case 'O':
			s.state = inSS3
		default: // Alt with a key sends ESC and the key: both are dropped
			s.state = notInEscape
		}
	case inCSI:
		if c >= '@' && c <= '~' {
			s.state = notInEscape
		}
	case inSS3:
		s.state = notInEscape
	}
	return true
}
