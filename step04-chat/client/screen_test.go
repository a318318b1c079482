//go:build linux || darwin

package main

import (
	"strings"
	"unicode/utf8"
)

// screenModel is a tiny terminal for the tests: it understands what the client writes to one (text,
// "\r", "\n", backspace and ESC [ K) and keeps the lines a person would see, so that a test says what
// the screen shows rather than which bytes drew it. Like a terminal with output processing on (ONLCR),
// it takes "\n" to start the next line at column 0.
type screenModel struct {
	lines    [][]rune
	row, col int
	partial  []byte   // an escape sequence or UTF-8 character cut by the end of a write
	unknown  []string // escape sequences it does not understand: a test should fail on them
}

func (s *screenModel) Write(p []byte) (int, error) {
	data := append(s.partial, p...)
	s.partial = nil
	for i := 0; i < len(data); {
		n := s.apply(data[i:])
		if n == 0 { // cut short: the rest comes with the next write
			s.partial = append([]byte(nil), data[i:]...)
			break
		}
		i += n
	}
	return len(p), nil
}

// apply draws the first thing in p and says how many bytes it took, or 0 if p ends too soon.
func (s *screenModel) apply(p []byte) int {
	for len(s.lines) <= s.row {
		s.lines = append(s.lines, nil)
	}
	switch p[0] {
	case '\r':
		s.col = 0
		return 1
	case '\n':
		s.row, s.col = s.row+1, 0
		for len(s.lines) <= s.row {
			s.lines = append(s.lines, nil)
		}
		return 1
	case '\b':
		s.col = max(0, s.col-1)
		return 1
	case 0x1b:
		end := strings.IndexFunc(string(p[1:]), func(r rune) bool { return r >= '@' && r <= '~' && r != '[' })
		if end < 0 {
			return 0
		}
		seq := string(p[:end+2])
		if seq == "\x1b[K" {
			s.lines[s.row] = s.lines[s.row][:min(s.col, len(s.lines[s.row]))]
		} else {
			s.unknown = append(s.unknown, seq)
		}
		return len(seq)
	}
	if !utf8.FullRune(p) {
		return 0
	}
	r, size := utf8.DecodeRune(p)
	line := s.lines[s.row]
	for len(line) < s.col {
		line = append(line, ' ')
	}
	if s.col < len(line) {
		line[s.col] = r
	} else {
		line = append(line, r)
	}
	s.lines[s.row] = line
	s.col++
	return size
}

// text is the screen, line by line, down to the line the cursor is on.
func (s *screenModel) text() []string {
	var out []string
	for i := 0; i <= s.row; i++ {
		if i < len(s.lines) {
			out = append(out, string(s.lines[i]))
		} else {
			out = append(out, "")
		}
	}
	return out
}

// cursorAtEnd says whether the cursor is just after the last character of its line, where the next
// typed character should appear.
func (s *screenModel) cursorAtEnd() bool {
	return s.row >= len(s.lines) || s.col == len(s.lines[s.row])
}
