//go:build linux

package tracing

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// The trace lines of an io_uring loop (step08). They replace the wait, ready and registration lines
// of select and epoll; every other line (accept, read, write, close, ...) is the handlers', as in the
// other steps:
//
//	submit     recv c1                a request put in the submission queue
//	submit     send c1 69 bytes
//	enter      in-flight=4            the loop hands the kernel what it submitted and sleeps until a
//	                                  request completes; the kernel holds 4 requests
//	complete   recv c1 4              a completion: the request and its result, as the system call
//	complete   send c1 ECONNRESET     would have returned it (bytes, 0 for EOF, or an errno)
//	complete   accept listener ok (more)   a multishot request that goes on

// Submit records a request for op on the socket named name (see NameOf); n > 0 is a send's length.
func (r *Recorder) Submit(op, name string, n int) {
	if r == nil {
		return
	}
	rest := op + " " + name
	if n > 0 {
		rest += " " + strconv.Itoa(n) + " bytes"
	}
	r.line("submit", rest)
}

// Enter is the wait line of an io_uring loop: the loop submits and sleeps; inFlight requests are the
// kernel's, counted by the loop.
func (r *Recorder) Enter(inFlight int) {
	if r == nil {
		return
	}
	r.line("enter", "in-flight="+strconv.Itoa(inFlight))
}

// Complete records a completion of op for name: res is what the request returned, or -errno; an
// accept's result is a new fd, shown as "ok" (fd numbers change from run to run). more says a
// multishot request goes on.
func (r *Recorder) Complete(op, name string, res int32, more bool) {
	if r == nil {
		return
	}
	rest := op
	if name != "" {
		rest += " " + name
	}
	switch {
	case res < 0:
		rest += " " + ErrName(unix.Errno(-res))
	case op == "accept":
		rest += " ok"
	default:
		rest += " " + strconv.Itoa(int(res))
	}
	if more {
		rest += " (more)"
	}
	r.line("complete", rest)
}

// NameOf returns the name the trace gives fd now: a loop keeps it for the lines it writes about a
// client after the client's close line (which forgets the name: the fd number may be reused).
func (r *Recorder) NameOf(fd int) string {
	if r == nil {
		return ""
	}
	return r.name(fd)
}
