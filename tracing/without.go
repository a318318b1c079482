package tracing

// Lines of a transcript that a comparison may leave out: their number or place depends on TCP timing
// that no scenario controls. The steps' tests (through tracetest) and the grader leave out the same.

import (
	"regexp"
	"slices"
	"strings"
)

// Received matches the transcript lines that say what a client received. Where one lands among the
// server's lines can depend on TCP timing that no scenario controls: a client that does not read
// may still see its receive window reopen as its kernel compacts the bytes queued for it, and then
// the server writes the rest of its queue before the client's "expect" rather than during it.
var Received = regexp.MustCompile(`^<< `)

// SlowReaderWrites matches the lines of a turn spent writing to a client that does not read: how many
// bytes each write takes, and so how many writes and turns there are, depends on when the client's
// kernel acknowledges and reopens its window, which no scenario controls.
var SlowReaderWrites = regexp.MustCompile(`^((write|unqueue|drop) +c1 |(select|ready|epoll_wait|epoll_ctl) )`)

// Without returns the transcript's lines that match none of the patterns.
func Without(transcript string, patterns ...*regexp.Regexp) string {
	var b strings.Builder
	for _, l := range Lines(transcript) {
		if !slices.ContainsFunc(patterns, func(p *regexp.Regexp) bool { return p.MatchString(l) }) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
