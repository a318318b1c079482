//go:build linux

package main

// The loop's other duties, beside serving its clients (main.go): dealing the clients it accepts,
// stopping with the others, and going deaf while another loop's inbox is full.

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// stopping is the signal that stops the server, once one has come (0 until then). Every loop hears the
// signal on its own pipe, each in its own time; the first to hear it sets this, and every loop looks
// at it after each wait, so that no loop reads a client after another has stopped reading.
var stopping atomic.Int32

// stop begins this loop's shutdown: it stops accepting and reading, tells its part of the room, and
// closes gently every client that has been sent everything. It returns when to give up on the rest.
func (l *loop) stop(p *poller) (stopBy time.Time) {
	tr := l.tr
	tr.Note("signal", "%s: stop accepting, send what is queued (at most %v), then exit", unix.SignalName(unix.Signal(stopping.Load())), shutdownGrace)
	if l.ln >= 0 {
		p.remove(l.ln)
		unix.Close(l.ln)
		tr.Close(l.ln, "shutdown")
	}
	p.remove(l.sig)
	p.stopping = true
	l.svc.stop()
	for _, c := range p.byFD() {
		if !c.wantWrite && !c.wantClose {
			linger(c, tr) // everything is sent: close gently (signals.go)
		}
		p.follow(c) // none is heard any more
	}
	return time.Now().Add(shutdownGrace)
}

// hear stops reading every client of the loop (deaf: another loop's inbox is full), or starts again.
func (l *loop) hear(p *poller, deaf bool) {
	p.deaf = deaf
	if deaf {
		l.tr.Note("pause", "reading every client: an inbox holds more than %d bytes", inboxLimit)
	} else {
		l.tr.Note("resume", "reading: the inboxes have room")
	}
	for _, c := range p.byFD() {
		p.follow(c)
	}
}

// dealTo returns the loop that is to serve the next client this loop accepts: itself with -reuseport
// (the kernel has dealt already), or the next loop in turn.
func (l *loop) dealTo() int {
	if !l.deal {
		return l.id
	}
	l.dealt++
	return (l.dealt - 1) % len(l.mail.inboxes)
}
