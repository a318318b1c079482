//go:build linux

package main

import "muxlab/tracing"

// The room across the loops: each loop holds the members it owns, in its own room (room.go), and
// the parts meet only through the registry of names and the loops' inboxes.

// part is what one loop's room knows of the rest: its loop's number, its mail to the other loops,
// and the registry they share.
type part struct {
	loop  int
	mail  *mail
	names *registry
}

// share sends a line said to the room to every other loop, once each, where deliver says it to that
// loop's members. A line with no sender (from nil: the server is stopping, or the line came from
// another loop) stays here: every loop says its own "stopping", and a line is shared once.
func (p *part) share(from *conn, line string) {
	if from != nil {
		p.mail.sendOthers(message{line: line, at: p.names.tick()})
	}
}

// whisper says a private line to member id on loop: here at once, or through that loop's inbox.
func (rm *room) whisper(to entry, line string) {
	if to.loop != rm.loop {
		rm.mail.send(to.loop, message{to: to.id, line: line})
		return
	}
	rm.deliver(message{from: rm.loop, to: to.id, line: line})
}

// deliver says a line from another loop to this loop's members: to all of them that were in the room
// when it was said (broadcast's loop, with the members who joined since skipping it, as a member skips
// its own lines), or to the one it is for, if it is still here (it may have left since).
func (rm *room) deliver(m message) {
	if m.to == 0 {
		if rm.tr.On() {
			rm.tr.Note("deliver", "from L%d %s", m.from, tracing.Quote([]byte(m.line)))
		}
		at := rm.head()
		rm.log = append(append(rm.log, m.line...), '\n')
		n := len(m.line) + 1
		for _, c := range rm.members {
			if c.left || c.id > m.at {
				c.skip(at, n)
			} else {
				rm.queued(c, n)
			}
		}
		return
	}
	for _, c := range rm.members {
		if c.id == m.to && !c.left {
			if m.from != rm.loop {
				rm.tr.Event("deliver", c.fd, "from L%d (private)", m.from)
			}
			rm.say(c, m.line)
			return
		}
	}
}
