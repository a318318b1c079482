//go:build linux

package main

import (
	"errors"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// echo is what this server serves: each client gets back what it sent, through its queue. Its two
// handlers, read and write, are called by the loop when a client is ready; they say what they want
// next in the client's want fields, and only the loop talks to the kernel's multiplexer.
type echo struct {
	high, low int // backpressure: stop reading a client at high pending bytes, read again below low
	tr        *tracing.Recorder
	spare     []byte // the buffer of the last queue that emptied: the next queue starts in it
}

// read reads what c sent and queues it, to be written back when c is writable (see write).
func (e *echo) read(c *conn, buf []byte) {
	tr := e.tr
	n, err := unix.Read(c.fd, buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		tr.Again(c.fd, "read") // nothing after all: the loop will say when there is
		return
	case errors.Is(err, unix.ECONNRESET):
		tr.Error(c.fd, "read", err)
		end(c, "reset", tr)
		return
	case err != nil:
		tr.Error(c.fd, "read", err)
		end(c, "error", tr)
		return
	case n == 0:
		// B1: a read of 0 bytes is EOF. The seed ignored it, and select reported the socket readable forever.
		tr.ReadEOF(c.fd)
		if c.pending() == 0 {
			end(c, "EOF", tr)
			return
		}
		// FIN ends what the client sends, not what it reads (it may have half-closed): finish the echo.
		c.left, c.wantRead = true, false
		tr.Event("finish", c.fd, "%d bytes still to send, then close", c.pending())
		return
	}
	tr.Read(c.fd, buf[:n])
	// B5: append to the queue this client has, never start a new one. Bytes already sent are dropped
	// first, so the queue holds only what is pending.
	if c.out == nil {
		c.out, e.spare = e.spare, nil // no new buffer, and so no garbage, for each echo
	}
	c.out = append(c.out[:0], c.out[c.sent:]...)
	c.sent = 0
	c.out = append(c.out, buf[:n]...)
	c.wantWrite = true
	tr.Queue(c.fd, n, c.pending())
	if c.pending() >= e.high {
		// Backpressure: reading more would only grow the queue. The client's bytes wait in the kernel,
		// and once its buffers fill, the client's own writes block: it slows down to the pace it reads at.
		c.wantRead = false
		tr.Event("pause", c.fd, "reading: %d pending >= high-water %d", c.pending(), e.high)
	}
}

// write writes c's queue from the cursor on, until the queue is empty or the socket is full: the loop
// said c is writable, so the first write takes something (B6); each write may take less than it was
// given, and the rest stays queued, in order, for the next time c is writable (B7).
func (e *echo) write(c *conn) {
	tr := e.tr
	before := c.pending()
	for c.pending() > 0 {
		n, err := unix.Write(c.fd, c.out[c.sent:])
		if errors.Is(err, unix.EAGAIN) {
			tr.Again(c.fd, "write") // the socket's buffer is full: wait until the loop says it has space
			break
		}
		if err != nil {
			// ECONNRESET or EPIPE: the client reset the connection, nobody will read the rest (B9).
			tr.Error(c.fd, "write", err)
			reason := "error"
			if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
				reason = "reset"
			}
			end(c, reason, tr)
			return
		}
		tr.Write(c.fd, n, c.pending())
		c.sent += n
	}
	tr.Unqueue(c.fd, before-c.pending(), c.pending())
	if c.pending() == 0 {
		// An idle client holds no buffer; the echo keeps one for the next queue. Most echoes are
		// written in the turn that queued them, so one buffer serves them all: 4 KiB echoes made
		// 4 KiB of garbage each without it (see docs/performance.md).
		e.spare, c.out, c.sent, c.wantWrite = c.out[:0], nil, 0, false
	}
	if !c.wantRead && !c.left && c.pending() < e.low {
		c.wantRead = true
		tr.Event("resume", c.fd, "reading: %d pending < low-water %d", c.pending(), e.low)
	}
	if c.left && c.pending() == 0 {
		end(c, "EOF", tr)
	}
}

// The loop's other handlers have nothing to do for an echo: there is no room to join or to tell.
func (e *echo) join(c *conn)       {}
func (e *echo) endTurn()           {}
func (e *echo) stop()              {}
func (e *echo) takeWoken() []*conn { return nil }
func (e *echo) deliver(message)    {}
