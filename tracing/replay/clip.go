//go:build unix

package replay

import (
	"bytes"
	"fmt"
	"strings"
)

// A clip holds a text that may grow without bound (the trace of a server stuck in a loop) in bounded
// memory: its first headMax bytes and about its last tailMax bytes, cut between lines where it can,
// and how many lines it dropped between them. A text shorter than headMax is held whole.
type clip struct {
	headMax, tailMax int
	head, tail       []byte
	closed           bool  // the head is full: what comes now goes to the tail
	lines            int   // newlines written in all
	cutLines         int   // newlines in what was dropped
	cutBytes         int64 // bytes dropped
}

func newClip(headMax, tailMax int) *clip { return &clip{headMax: headMax, tailMax: tailMax} }

func (c *clip) Write(p []byte) (int, error) {
	n := len(p)
	c.lines += bytes.Count(p, []byte{'\n'})
	if !c.closed {
		room := c.headMax - len(c.head)
		if len(p) <= room {
			c.head = append(c.head, p...)
			return n, nil
		}
		// The head ends after the last whole line that fits, so that the cut falls between lines.
		k := bytes.LastIndexByte(p[:room], '\n') + 1
		c.head = append(c.head, p[:k]...)
		p = p[k:]
		c.closed = true
	}
	c.tail = append(c.tail, p...)
	// Trimming only past half as much again copies each byte a bounded number of times.
	if len(c.tail) > c.tailMax+c.tailMax/2 {
		c.trim()
	}
	return n, nil
}

// trim drops the start of the tail, down to tailMax bytes and on to the next line start.
func (c *clip) trim() {
	drop := len(c.tail) - c.tailMax
	if drop <= 0 {
		return
	}
	if i := bytes.IndexByte(c.tail[drop-1:], '\n'); i >= 0 && drop+i < len(c.tail) {
		drop += i
	}
	c.cutLines += bytes.Count(c.tail[:drop], []byte{'\n'})
	c.cutBytes += int64(drop)
	c.tail = append(c.tail[:0], c.tail[drop:]...)
}

// moveTo writes what c holds to w as if it were the whole text: what c cut, w cuts too, so that w
// shows one "... N lines cut ..." with the count of every line missing.
func (c *clip) moveTo(w *clip) {
	w.Write(c.head)
	if c.cut() {
		// The tail w holds and the text c cut are one gap now: w's tail cannot stand next to c's.
		w.lines += c.cutLines
		w.cutLines += c.cutLines + bytes.Count(w.tail, []byte{'\n'})
		w.cutBytes += c.cutBytes + int64(len(w.tail))
		w.tail = w.tail[:0]
		w.closed = true
	}
	w.Write(c.tail)
}

// cut says whether the clip dropped anything.
func (c *clip) cut() bool {
	c.trim()
	return c.cutBytes > 0
}

// String returns the text held: the head, then "... N lines cut ..." if something was dropped, then
// the tail.
func (c *clip) String() string {
	if !c.cut() {
		return string(c.head) + string(c.tail)
	}
	var b strings.Builder
	b.Write(c.head)
	if len(c.head) > 0 && c.head[len(c.head)-1] != '\n' {
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "... %d lines cut (%d bytes) ...\n", c.cutLines, c.cutBytes)
	b.Write(c.tail)
	return b.String()
}

// excerpt shows text, which has total lines in all (more than it holds if it is a clip's), by its
// first head and last tail lines, each cut to maxExcerptLine bytes, with "... N lines cut ..."
// between them.
func excerpt(text string, total, head, tail int) string {
	if text == "" {
		return ""
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) > head+tail {
		cut := fmt.Sprintf("... %d lines cut ...", total-head-tail)
		lines = append(append(lines[:head:head], cut), lines[len(lines)-tail:]...)
	}
	var b strings.Builder
	for _, l := range lines {
		if len(l) > maxExcerptLine {
			l = fmt.Sprintf("%s...(+%d bytes)", l[:maxExcerptLine], len(l)-maxExcerptLine)
		}
		b.WriteString(l + "\n")
	}
	return b.String()
}

// maxExcerptLine is how much of one line an excerpt shows.
const maxExcerptLine = 300
