package tracing

import (
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Several event loops, one per thread, writing one trace (step09): every line starts with its loop's
// name (L0, L1, ...), a line is written whole under a lock the loops share, so lines from two loops
// never tear, and clients are named c1, c2, ... across all the loops, in order of acceptance.

// together is what the Recorders of one program's loops share.
type together struct {
	mu      sync.Mutex // held while a line is written, and while a client is named
	clients int
}

// Loops returns n Recorders writing to w, one per event loop, named L0 to Ln-1.
func Loops(w io.Writer, showFDs bool, n int) []*Recorder {
	shared := &together{}
	rs := make([]*Recorder, n)
	for i := range rs {
		rs[i] = New(w, showFDs)
		rs[i].prefix, rs[i].shared = "L"+strconv.Itoa(i)+" ", shared
	}
	return rs
}

// Pass records that client fd leaves this loop for the loop named to ("L1"), and forgets its name here:
// the fd is the other loop's now. It returns the name, for the other loop's Adopt.
func (r *Recorder) Pass(fd int, to string) string {
	if r == nil {
		return ""
	}
	name := r.names[fd]
	r.line("pass", r.name(fd)+" to "+to)
	delete(r.names, fd)
	return name
}

// Adopt records that client fd came from the loop named from, under the name it had there.
func (r *Recorder) Adopt(fd int, name, from string) {
	if r == nil {
		return
	}
	r.line("adopt", r.Name(fd, name)+" from "+from)
}

// ByLoop puts a transcript of several loops in one order, whatever the interleaving of the run: in each
// stretch of server lines between two lines of the clients (">>", "<<"), the lines of L0 come first,
// then those of L1, and so on, each loop's in the order it wrote them. What each loop did for each
// action is all a test can ask of loops that run at once, and all this keeps. A transcript of one loop
// without prefixes comes back as it was.
func ByLoop(transcript string) string {
	lines := Lines(transcript)
	loopOf := func(l string) int {
		if len(l) < 3 || l[0] != 'L' {
			return -1
		}
		n, rest, ok := strings.Cut(l[1:], " ")
		i, err := strconv.Atoi(n)
		if !ok || err != nil || rest == "" {
			return -1
		}
		return i
	}
	for start := 0; start < len(lines); {
		end := start
		for end < len(lines) && !strings.HasPrefix(lines[end], ">> ") && !strings.HasPrefix(lines[end], "<< ") {
			end++
		}
		slices.SortStableFunc(lines[start:end], func(a, b string) int { return loopOf(a) - loopOf(b) })
		start = end + 1
	}
	if len(lines) == 0 || !strings.HasSuffix(transcript, "\n") {
		return strings.Join(lines, "\n")
	}
	return strings.Join(lines, "\n") + "\n"
}
