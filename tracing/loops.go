package tracing

import (
	"io"
	"strconv"
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
