//go:build linux

package main

// The echo service of step03, on the epoll loop. The handlers are step03's, line for line, but for two
// things: a read says whether it found the socket empty (c.drained), because an edge-triggered loop
// reads until then; and an emptied queue leaves its buffer to the next one (spareOut), so that tens of
// thousands of echoes a second do not each leave a buffer behind for the garbage collector.

import (
	"errors"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// spareOut is a queue buffer no client holds: the last one that emptied. The loop is one thread, so
// one variable is enough to hand it from client to client.
var spareOut []byte

// echo reads what c sent and queues it, to be written back when c is writable (see flush). It reports
// false when c is finished.
func echo(c *conn, buf []byte, high int, tr *tracing.Recorder) bool {
	n, err := unix.Read(c.fd, buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		tr.Again(c.fd, "read") // nothing after all: epoll will say when there is
		c.drained = true
		return true
	case errors.Is(err, unix.ECONNRESET):
		tr.Error(c.fd, "read", err)
		drop(c, tr)
		tr.Close(c.fd, "reset")
		return false
	case err != nil:
		tr.Error(c.fd, "read", err)
		drop(c, tr)
		tr.Close(c.fd, "error")
		return false
	case n == 0:
		// B1: a read of 0 bytes is EOF. The seed ignored it, and select reported the socket readable forever.
		tr.ReadEOF(c.fd)
		if c.pending() == 0 {
			tr.Close(c.fd, "EOF")
			return false
		}
		// FIN ends what the client sends, not what it reads (it may have half-closed): finish the echo.
		c.eof = true
		tr.Event("finish", c.fd, "%d bytes still to send, then close", c.pending())
		return true
	}
	tr.Read(c.fd, buf[:n])
	// A read that returns fewer bytes than asked for took all the socket had: for a stream socket that
	// is as good as EAGAIN (epoll(7), Q9), and saves the read that would say so, one per message.
	c.drained = n < len(buf)
	// B5: append to the queue this client has, never start a new one. Bytes already sent are dropped
	// first, so the queue holds only what is pending.
	if c.out == nil {
		c.out, spareOut = spareOut, nil // the buffer the last emptied queue gave back, if any
	}
	c.out = append(c.out[:0], c.out[c.sent:]...)
	c.sent = 0
	c.out = append(c.out, buf[:n]...)
	tr.Queue(c.fd, n, c.pending())
	if c.pending() >= high {
		// Backpressure: reading more would only grow the queue. The client's bytes wait in the kernel,
		// and once its buffers fill, the client's own writes block: it slows down to the pace it reads at.
		c.paused = true
		tr.Event("pause", c.fd, "reading: %d pending >= high-water %d", c.pending(), high)
	}
	return true
}

// flush writes c's queue from the cursor on, until the queue is empty or the socket is full: epoll
// said c is writable, or was not watching it yet, and a nonblocking write to a socket with no room
// says EAGAIN instead of stalling the loop (B6); each write may take less than it was
// given, and the rest stays queued, in order, for the next time c is writable (B7). It reports false
// when c is finished.
func flush(c *conn, low int, tr *tracing.Recorder) bool {
	before := c.pending()
	for c.pending() > 0 {
		n, err := unix.Write(c.fd, c.out[c.sent:])
		if errors.Is(err, unix.EAGAIN) {
			tr.Again(c.fd, "write") // the socket's buffer is full: wait in epoll_wait until it has room
			break
		}
		if err != nil {
			// ECONNRESET or EPIPE: the client reset the connection, nobody will read the rest (B9).
			tr.Error(c.fd, "write", err)
			drop(c, tr)
			reason := "error"
			if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
				reason = "reset"
			}
			tr.Close(c.fd, reason)
			return false
		}
		tr.Write(c.fd, n, c.pending())
		c.sent += n
	}
	tr.Unqueue(c.fd, before-c.pending(), c.pending())
	if c.pending() == 0 {
		// An idle client holds no buffer. The loop keeps one for the next queue: most echoes are
		// written in the turn that queued them, so one buffer serves them all, with no garbage.
		spareOut, c.out, c.sent = c.out[:0], nil, 0
	}
	if c.paused && c.pending() < low {
		c.paused = false
		tr.Event("resume", c.fd, "reading: %d pending < low-water %d", c.pending(), low)
	}
	if c.eof && c.pending() == 0 {
		tr.Close(c.fd, "EOF")
		return false
	}
	return true
}
