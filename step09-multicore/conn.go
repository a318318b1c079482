//go:build linux

package main

import "muxlab/tracing"

// conn is one client, as the loop and the handlers share it. The handlers say in the want fields what
// they want next for the client; only the loop acts on them: it watches the socket for reading while
// wantRead, for writing while wantWrite, and closes it once wantClose.
type conn struct {
	fd        int
	wantRead  bool // read from it when it is readable
	wantWrite bool // write its queue when it is writable: exactly while the queue holds bytes
	wantClose bool // finished (the handler said why in the trace): close the socket

	out  []byte // the queue: bytes for this client, in order; out[sent:] still has to be written
	sent int    // the cursor: how much of out is written already
	left bool   // the client sent FIN: nothing more is read; close once the queue is empty

	lingering bool // the server is stopping and has sent it all and a FIN: see linger (signals.go)

	*member // the room's state for this member (room.go)
}

// pending is how many queued bytes still have to be written.
func (c *conn) pending() int { return len(c.out) - c.sent }

// end finishes c for the reason the trace gives: what it still had to receive is dropped, it wants
// nothing more, and the loop closes its socket (B2: a finished client gives its fd back).
func end(c *conn, reason string, tr *tracing.Recorder) {
	if c.pending() > 0 {
		tr.Event("drop", c.fd, "%d pending bytes", c.pending())
	}
	c.out, c.sent = nil, 0
	tr.Close(c.fd, reason)
	c.wantRead, c.wantWrite, c.wantClose = false, false, true
}
