// Package tracing records what an event loop does, one line per event, in the format every step of the
// lab shares (docs/trace-format.md). A trace names sockets by role and order of appearance (listener, c1,
// c2, ...), never by fd number, port or time, so the same scenario gives the same trace on every run and
// two steps' traces can be diffed line by line.
//
// A nil *Recorder records nothing: every method returns at once, so a step with tracing off pays one
// comparison per call.
package tracing

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// PayloadLimit is how many bytes of a read are quoted in the trace; the rest is counted, not shown.
const PayloadLimit = 40

// Recorder writes trace lines. It is used by one goroutine: the loop it describes.
type Recorder struct {
	w        io.Writer
	buf      []byte // the line being written
	showFDs  bool
	names    map[int]string
	clients  int
	queued   []queued  // queue lines not yet written: see Queue
	interest int       // epoll loops: how many fds the interest list holds (see EpollCtl)
	prefix   string    // one of several loops (see Loops): its name, before every line
	shared   *together // one of several loops: what the loops' Recorders share
}

// queued is one client's queue line, held until a line of another kind is written.
type queued struct{ fd, n, pending int }

// New returns a Recorder writing to w. With showFDs, every name also carries its fd number, e.g. c1(fd5):
// useful live, never in a golden trace.
func New(w io.Writer, showFDs bool) *Recorder {
	return &Recorder{w: w, showFDs: showFDs, names: map[int]string{}}
}

// On reports whether r records anything. Guard work done only for the trace (building a list) with it.
func (r *Recorder) On() bool { return r != nil }

// Name gives fd a role name ("listener", "stdin", "server") and returns it.
func (r *Recorder) Name(fd int, role string) string {
	if r == nil {
		return ""
	}
	r.names[fd] = role
	return r.name(fd)
}

// NameClient gives fd the next client name: c1, c2, ... in order of acceptance.
func (r *Recorder) NameClient(fd int) string {
	if r == nil {
		return ""
	}
	if r.shared != nil {
		r.shared.mu.Lock()
		r.shared.clients++
		r.clients = r.shared.clients
		r.shared.mu.Unlock()
	} else {
		r.clients++
	}
	return r.Name(fd, "c"+strconv.Itoa(r.clients))
}

func (r *Recorder) name(fd int) string {
	n, ok := r.names[fd]
	if !ok {
		n = "fd" + strconv.Itoa(fd) // an fd nobody named: a bug in the step, shown rather than hidden
	} else if r.showFDs {
		n += "(fd" + strconv.Itoa(fd) + ")"
	}
	return n
}

func (r *Recorder) list(fds []int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, fd := range fds {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(r.name(fd))
	}
	b.WriteByte(']')
	return b.String()
}

// line writes one trace line, the verb in a column of its own, with one write: a reader sees every line
// the moment it happens, even if the loop then blocks somewhere it should not.
func (r *Recorder) line(verb, rest string) {
	if len(r.queued) > 0 {
		r.writeQueued()
	}
	r.buf = append(append(r.buf[:0], r.prefix...), verb...)
	for len(r.buf) < len(r.prefix)+10 {
		r.buf = append(r.buf, ' ')
	}
	r.buf = append(r.buf, ' ')
	r.buf = append(r.buf, rest...)
	r.buf = append(r.buf, '\n')
	if r.shared != nil {
		r.shared.mu.Lock()
		defer r.shared.mu.Unlock()
	}
	r.w.Write(r.buf)
}

// Listen records the listening socket, which is named "listener".
func (r *Recorder) Listen(fd int) {
	if r == nil {
		return
	}
	r.line("listen", r.Name(fd, "listener"))
}

// Accept names a newly accepted client and records it.
func (r *Recorder) Accept(fd int) {
	if r == nil {
		return
	}
	r.line("accept", r.NameClient(fd))
}

// Select is the wait line of a select loop: what was asked.
func (r *Recorder) Select(read, write, except []int) {
	if r == nil {
		return
	}
	r.line("select", "read="+r.list(read)+" write="+r.list(write)+" except="+r.list(except))
}

// Selected records what select reported ready: what came back.
func (r *Recorder) Selected(read, write, except []int) {
	if r == nil {
		return
	}
	r.line("ready", "read="+r.list(read)+" write="+r.list(write)+" except="+r.list(except))
}

// Block is the wait line of a blocking program: it is about to block in call (accept, read) on fd.
func (r *Recorder) Block(call string, fd int) {
	if r == nil {
		return
	}
	r.line("block", call+" "+r.name(fd))
}

// Read records n bytes read from fd, quoting the first PayloadLimit of them.
func (r *Recorder) Read(fd int, p []byte) {
	if r == nil {
		return
	}
	r.line("read", fmt.Sprintf("%s %d bytes %s", r.name(fd), len(p), Quote(p)))
}

// ReadEOF records a read that returned 0 bytes: the peer will send no more.
func (r *Recorder) ReadEOF(fd int) {
	if r == nil {
		return
	}
	r.line("read", r.name(fd)+" EOF")
}

// Write records a write that took n of the m bytes offered (n < m is a partial write).
func (r *Recorder) Write(fd int, n, m int) {
	if r == nil {
		return
	}
	r.line("write", fmt.Sprintf("%s %d of %d bytes", r.name(fd), n, m))
}

// Queue records n bytes added to fd's write queue, which now holds pending bytes: "queue c1 +5 bytes,
// 5 pending". Queue calls in a row are summed, one line per client in the order they first came,
// written before the next line of another kind: a read of 200 lines for a room of three is two
// queue lines, not 400, and the handler that queues keeps no count for the trace.
// Queue and Unqueue come with every message, so they take ints where Event takes ...any:
// an int put in an interface is an allocation (past 255), and with tracing off that is pure cost.
func (r *Recorder) Queue(fd int, n, pending int) {
	if r == nil {
		return
	}
	for i := range r.queued {
		if r.queued[i].fd == fd {
			r.queued[i].n += n
			r.queued[i].pending = pending
			return
		}
	}
	r.queued = append(r.queued, queued{fd, n, pending})
}

// Flush writes the queue lines held by Queue now. A loop needs no such call: its next wait line
// writes them. Goroutines that share a recorder under a mutex (step 10) call it before they let go of
// the mutex, so that what one of them queued is in the trace before anything another one does.
func (r *Recorder) Flush() {
	if r == nil || len(r.queued) == 0 {
		return
	}
	r.writeQueued()
}

// writeQueued writes the queue lines held by Queue.
func (r *Recorder) writeQueued() {
	held := r.queued
	r.queued = nil // line, below, must not come back here
	for _, q := range held {
		r.line("queue", fmt.Sprintf("%s +%d bytes, %d pending", r.name(q.fd), q.n, q.pending))
	}
	r.queued = held[:0]
}

// Unqueue records n bytes written from fd's queue, which still holds pending bytes.
func (r *Recorder) Unqueue(fd int, n, pending int) {
	if r == nil {
		return
	}
	r.line("unqueue", fmt.Sprintf("%s -%d bytes, %d pending", r.name(fd), n, pending))
}

// Again records EAGAIN from op ("read", "write", "accept"): nothing could be done without blocking.
func (r *Recorder) Again(fd int, op string) {
	if r == nil {
		return
	}
	r.line(op, r.name(fd)+" EAGAIN")
}

// Error records a failed call by the errno's name (ECONNRESET), which is the same on every run.
func (r *Recorder) Error(fd int, op string, err error) {
	if r == nil {
		return
	}
	r.line(op, r.name(fd)+" error "+ErrName(err))
}

// Close records that fd was closed and why (EOF, reset, error, refused, ...). The name is then forgotten:
// the kernel will hand the same fd number to a later client, which gets a new name.
func (r *Recorder) Close(fd int, reason string) {
	if r == nil {
		return
	}
	r.line("close", r.name(fd)+" ("+reason+")")
	delete(r.names, fd)
}

// Event records an application event on fd, e.g. Event("pause", fd, "reading: %d pending", 9).
// The arguments are formatted only when tracing is on.
func (r *Recorder) Event(verb string, fd int, format string, args ...any) {
	if r == nil {
		return
	}
	r.line(verb, r.name(fd)+" "+fmt.Sprintf(format, args...))
}

// Note records a line about the whole program rather than one socket (e.g. "shutdown").
func (r *Recorder) Note(verb, format string, args ...any) {
	if r == nil {
		return
	}
	r.line(verb, fmt.Sprintf(format, args...))
}

// Quote renders a payload for the trace: Go-quoted, cut at PayloadLimit bytes with the rest counted.
func Quote(p []byte) string {
	if len(p) <= PayloadLimit {
		return strconv.Quote(string(p))
	}
	return fmt.Sprintf("%s...(+%d)", strconv.Quote(string(p[:PayloadLimit])), len(p)-PayloadLimit)
}
