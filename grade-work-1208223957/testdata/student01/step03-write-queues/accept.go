//go:build linux || darwin

package main

import (
	"errors"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// A process may hold only so many fds (ulimit -n). When they are all in use, accept fails with
// EMFILE and the client stays in the listener's backlog, so the listener stays ready and the loop's
// wait returns at once, forever: a busy loop that serves nobody. The cure is to keep one fd spare:
// give it back, accept the client with it, tell the client why, close it, and take the spare again.

// fdSetSize is FD_SETSIZE: an FdSet has one bit for each fd from 0 to 1023 (on Linux and macOS).
const fdSetSize = 1024

// refusal is what a client hears when the server is out of fds.
const refusal = "server busy: out of file descriptors, try again later\n"

// openSpare opens the fd kept spare for that moment.
func openSpare() (int, error) {
	return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// accept takes one client from the listener, or nil if there is none to serve. Its socket is
// nonblocking: see the write handler. more is false once the backlog is empty (EAGAIN) or accept
// failed for good: a loop that must empty the backlog (step 06) accepts until then.
func accept(ln int, spare *int, sndbuf int, tr *tracing.Recorder) (c *conn, more bool) {
	fd, _, err := unix.Accept(ln)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ECONNABORTED) {
		tr.Again(ln, "accept") // nobody waits, or the client left before we got to it
		return nil, errors.Is(err, unix.ECONNABORTED)
	}
	if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
		tr.Error(ln, "accept", err)
		unix.Close(*spare)
		if fd, _, err = unix.Accept(ln); err == nil {
			tr.Accept(fd)
			unix.Write(fd, []byte(refusal))
			unix.Close(fd)
			tr.Close(fd, "refused: out of fds")
		}
		*spare, _ = openSpare()
		return nil, err == nil
	}
	if err != nil {
		tr.Error(ln, "accept", err)
		return nil, false
	}
	unix.CloseOnExec(fd)
	unix.SetNonblock(fd, true) // a write takes what fits and returns, instead of stalling the loop (B3)
	tr.Accept(fd)
	if fd >= fdSetSize {
		// FdSet.Set would panic (or, in C, write past the set). Refuse this one client; serve the rest (B19).
		unix.Write(fd, []byte("server full: this server uses select, which cannot watch more than 1024 fds\n"))
		unix.Close(fd)
		tr.Close(fd, "refused: fd past FD_SETSIZE")
		return nil, true
	}
	if sndbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	return &conn{fd: fd, wantRead: true}, true
}
