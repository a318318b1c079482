//go:build linux

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

// refusal is what a client hears when the server is out of fds (main sets the echo's with -echo).
var refusal = "* the room is full: the server is out of file descriptors, try again later\n"

// openSpare opens the fd kept spare for that moment.
func openSpare() (int, error) {
	return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// accept takes one client from the listener, or nil if there is none to serve. Its socket is
// nonblocking: see the write handler. more is false once the backlog is empty (EAGAIN) or accept
// failed for good: a loop that must empty the backlog (step 06) accepts until then.
func accept(ln int, spare *int, sndbuf int, tr *tracing.Recorder) (c *conn, more bool) {
	fd, err := accept4(ln)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ECONNABORTED) {
		tr.Again(ln, "accept") // nobody waits, or the client left before we got to it
		return nil, errors.Is(err, unix.ECONNABORTED)
	}
	if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
		tr.Error(ln, "accept", err)
		unix.Close(*spare)
		if fd, err = accept4(ln); err == nil {
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
	// No Nagle: it holds a short write back until the previous one is acknowledged, and a member who
	// only listens acknowledges late (delayed ACK, up to 40 ms). Go's net package turns it off too.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	tr.Accept(fd)
	if sndbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	return &conn{fd: fd, wantRead: true}, true
}

// accept4 is accept(2) with flags: the new socket is nonblocking (a write takes what fits and returns,
// instead of stalling the loop: B3) and close-on-exec from the start. It asks for no address, which
// the trace does not show: unix.Accept's address buffer and the Sockaddr it builds are garbage with
// every client, and a server holding 10,000 idle ones feels it: RSS per idle connection 283 B with
// unix.Accept, 134 B with this (go run ./bench -workloads scan -servers step05, median of 5 windows).
func accept4(ln int) (int, error) {
	fd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(ln), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}
