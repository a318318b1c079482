//go:build linux

package main

// The chat room: what the loop serves in this step. Its handlers (join, read, write, endTurn, stop)
// are called by the loop; they queue lines and say in each member's want fields what they want next,
// and never touch the multiplexer. protocol.go says what the bytes mean.

import (
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// room is what the loop serves: who is here, what was said, and the limits that keep one member
// from costing the others, which an echo server never needed.
//
// A line said to the room is stored once, in the room's log, however many members it goes to; each
// member has a cursor into the log. A line for one member alone (a reply, a private message) is an
// aside of that member's, placed at the log position it was said at, so that every member receives
// everything in the order it was said. What the room holds is then the log, from the slowest cursor
// to the head, plus each member's asides: with every member's due bytes under -maxqueue, that is
// about -maxqueue of log plus what one turn reads, however big the room.
type room struct {
	members  []*conn // in the room or on the way out, in order of arrival
	guests   int     // default names handed out so far: guest1, guest2, ...
	maxLine  int
	maxQueue int
	tr       *tracing.Recorder

	log    []byte  // what was said to the room and some member has still to receive
	base   int     // the log position of log[0]: how much of the log was freed before it
	behind []*conn // members whose due bytes reached -maxqueue: see putOutSlow
	said   int     // bytes queued to members since the room last gave its memory back (see endTurn)
	woken  []*conn // members whose wants changed outside their own turn: epoll must be told of them
}

// member is a member's state in the room, kept beside its conn (an echo client has none).
type member struct {
	name    string  // B10: every line and notice about this member uses this, the member's own name
	in      framer  // the line being received, until its newline arrives
	unheard []frame // lines read but not heard yet: it is paused (see hear)
	cursor  int     // the log position of the next byte of the room's log it is to receive
	asides  []aside // lines for it alone, and stretches of the log it skips, in log order
	due     int     // bytes it still has to receive: the log from its cursor, less skips, plus asides
	blocked bool    // the last write hit EAGAIN: the socket had no space, the bytes wait for it
	roomy   bool    // its socket had space when putOutSlow asked, and nothing was written to it since
}

// An aside is a member's exception to the room's log, at log position at: a line for it alone, sent
// before the log's bytes from at on, or a stretch of skip bytes of the log it does not receive (what
// it said itself, or what was said after it left).
type aside struct {
	at   int
	text []byte
	skip int
}

// head is the log position just past the last byte said to the room.
func (rm *room) head() int { return rm.base + len(rm.log) }

// join gives a new client a default name, greets it and tells the others.
func (rm *room) join(c *conn) {
	// A newcomer hears what is said from now on, not before; someone may have taken guestN with /nick.
	c.member = &member{cursor: rm.head()}
	for c.name == "" || rm.find(c.name) != nil {
		rm.guests++
		c.name = fmt.Sprintf("guest%d", rm.guests)
	}
	c.in.max = rm.maxLine
	rm.members = append(rm.members, c)
	rm.tr.Event("join", c.fd, "as %s", c.name)
	rm.say(c, "* welcome, "+c.name+"; "+help)
	rm.broadcast(c, "* "+c.name+" joined")
	rm.putOutSlow(nil)
}

// read reads what c sent, cuts it into lines and hears each (see hear).
func (rm *room) read(c *conn, buf []byte) {
	tr := rm.tr
	n, err := c.recvResult(buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		tr.Again(c.fd, "read") // nothing after all: the loop will say when there is
		return
	case errors.Is(err, unix.ECONNRESET):
		tr.Error(c.fd, "read", err)
		rm.leave(c, "left (connection reset)")
		rm.drop(c)
		end(c, "reset", tr)
		rm.putOutSlow(nil)
		return
	case err != nil:
		tr.Error(c.fd, "read", err)
		rm.leave(c, "left (error: "+tracing.ErrName(err)+")")
		rm.drop(c)
		end(c, "error", tr)
		rm.putOutSlow(nil)
		return
	case n == 0:
		// B1, B11: a read of 0 bytes is EOF. The seed ignored it, and select reported the socket readable
		// forever. A last line sent without a newline still counts.
		tr.ReadEOF(c.fd)
		if line, ok := c.in.rest(); ok {
			rm.handle(c, line)
		}
		rm.leave(c, "left")
		rm.putOutSlow(nil)
		if c.due == 0 {
			end(c, "EOF", tr)
			return
		}
		// FIN ends what the client sends, not what it reads (it may have half-closed): finish sending.
		tr.Event("finish", c.fd, "%d bytes still to send, then close", c.due)
		return
	}
	tr.Read(c.fd, buf[:n])
	// B14: a read is not a message. The framer joins a line split over reads and splits several lines.
	rm.hear(c, c.in.feed(buf[:n]))
}

// hear handles c's lines in order. A member whose own due bytes reach the limit (a flood of /who,
// whose replies are bigger than the commands) is heard no more for now: the rest of its lines wait in
// unheard, and it is not read from (no EPOLLIN, not in select's read list) until write has sent its
// bytes below a quarter of the limit. Its replies cannot outgrow the limit by more than one line's.
func (rm *room) hear(c *conn, frames []frame) {
	for i, f := range frames {
		if c.left {
			return // after /quit nothing more is heard
		}
		if c.due >= rm.maxQueue {
			c.unheard, c.wantRead = frames[i:], false
			rm.tr.Event("pause", c.fd, "reading: %d pending >= limit %d", c.due, rm.maxQueue)
			return
		}
		if f.tooLong {
			rm.tr.Event("too-long", c.fd, "line over %d bytes: refused, skipped to its newline", rm.maxLine)
			rm.say(c, fmt.Sprintf("* line too long (over %d bytes): not sent; the lines around it were", rm.maxLine))
		} else {
			rm.handle(c, f.line)
		}
		rm.putOutSlow(c) // before the next line: nobody else's queue outgrows the limit by more than a line
	}
}

// handle carries out one line from c: a command, or something to say to the room.
func (rm *room) handle(c *conn, line string) {
	line = clean(line) // no control characters or broken UTF-8 reach anyone's terminal
	if strings.TrimSpace(line) == "" {
		return
	}
	cmd, problem := parseCommand(line)
	switch {
	case problem != "":
		rm.say(c, "* "+problem)
	case cmd.verb == "say":
		rm.broadcast(c, c.name+": "+cmd.text)
	case cmd.verb == "nick":
		if other := rm.find(cmd.name); other != nil && other != c {
			rm.say(c, "* the name "+cmd.name+" is taken")
			return
		}
		if cmd.name == c.name {
			rm.say(c, "* you are "+c.name+" already")
			return
		}
		old := c.name
		c.name = cmd.name
		rm.tr.Event("nick", c.fd, "%s is now %s", old, c.name)
		rm.say(c, "* you are now "+c.name)
		rm.broadcast(c, "* "+old+" is now "+c.name)
	case cmd.verb == "who":
		var names []string
		for _, m := range rm.members {
			if !m.left {
				names = append(names, m.name)
			}
		}
		rm.say(c, "* in the room: "+strings.Join(names, ", "))
	case cmd.verb == "msg":
		to := rm.find(cmd.name)
		if to == nil {
			rm.say(c, "* nobody here is called "+cmd.name)
			return
		}
		rm.say(to, c.name+" (private): "+cmd.text)
		if to != c {
			rm.say(c, "* to "+to.name+" (private): "+cmd.text) // what was sent, and to whom
		}
	case cmd.verb == "help":
		rm.say(c, fmt.Sprintf("* %s; lines up to %d bytes", help, rm.maxLine))
	case cmd.verb == "quit":
		rm.say(c, "* bye")
		rm.leave(c, "left")
	}
}

// find returns the member called name (names are unique regardless of case), or nil.
func (rm *room) find(name string) *conn {
	for _, c := range rm.members {
		if !c.left && strings.EqualFold(c.name, name) {
			return c
		}
	}
	return nil
}

// leave takes c out of the room, once, and tells the others with c's own name (B10, B11): however a
// member goes (EOF, reset, a failed write, /quit, too slow), the room hears it exactly once.
func (rm *room) leave(c *conn, how string) {
	if c.left {
		return
	}
	c.left, c.wantRead = true, false
	rm.tr.Event("leave", c.fd, "%s %s", c.name, how)
	rm.broadcast(c, "* "+c.name+" "+how)
}

// broadcast says line to every member of the room but from: the line goes into the room's log once,
// and every member's due bytes grow by its length. It writes nothing, so nobody waits for a slow
// member (B13), and it removes nobody from the list it walks, so nobody is skipped (B12).
func (rm *room) broadcast(from *conn, line string) {
	at := rm.head()
	rm.log = append(append(rm.log, line...), '\n')
	n := len(line) + 1
	for _, c := range rm.members {
		if c == from || c.left {
			c.skip(at, n)
		} else {
			rm.queued(c, n)
		}
	}
}

// say queues one line for c alone, as an aside at the log's head. It never writes: it tells the loop
// that c wants to be written to.
func (rm *room) say(c *conn, line string) {
	if last := len(c.asides) - 1; last >= 0 && c.asides[last].text != nil && c.asides[last].at == rm.head() {
		c.asides[last].text = append(append(c.asides[last].text, line...), '\n') // one piece: one write
	} else {
		c.asides = append(c.asides, aside{at: rm.head(), text: append([]byte(line), '\n')})
	}
	rm.queued(c, len(line)+1)
}

// queued counts n more bytes due to c, and notes c for putOutSlow when they reach the limit.
func (rm *room) queued(c *conn, n int) {
	rm.said += n
	c.due += n
	if !c.wantWrite {
		rm.woken = append(rm.woken, c)
	}
	c.wantWrite = true
	rm.tr.Queue(c.fd, n, c.due)
	if c.due >= rm.maxQueue && !c.roomy {
		rm.behind = append(rm.behind, c)
	}
}

// skip makes m skip n bytes of the log from at: the line is not for it.
func (m *member) skip(at, n int) {
	if m.due == 0 {
		m.cursor = at + n // nothing before it to send: just move on
		return
	}
	last := len(m.asides) - 1
	if last >= 0 && m.asides[last].text != nil && m.asides[last].at == at {
		// Its own lines may as well come after the bytes it skips: then the next one joins them.
		text := m.asides[last]
		m.asides = m.asides[:last]
		m.skip(at, n)
		text.at = at + n
		m.asides = append(m.asides, text)
		return
	}
	if last >= 0 && m.asides[last].text == nil && m.asides[last].at+m.asides[last].skip == at {
		m.asides[last].skip += n // one stretch of skips, however many lines
		return
	}
	m.asides = append(m.asides, aside{at: at, skip: n})
}

// next returns the bytes c is to receive next, in one piece: an aside's line, or the log up to the
// next aside. Skips at its cursor are passed on the way.
func (rm *room) next(c *conn) []byte {
	for len(c.asides) > 0 && c.asides[0].at == c.cursor {
		if c.asides[0].text != nil {
			return c.asides[0].text[c.sent:]
		}
		c.cursor += c.asides[0].skip
		c.asides = c.asides[1:]
	}
	end := rm.head()
	if len(c.asides) > 0 {
		end = c.asides[0].at
	}
	return rm.log[c.cursor-rm.base : end-rm.base]
}

// write writes what c is to receive, until it has it all or the socket is full (see send); then, if
// c was paused and is now due few enough bytes, it hears c's lines again.
func (rm *room) write(c *conn) {
	rm.send(c)
	if c.left || c.wantRead || c.wantClose || c.due >= rm.maxQueue/4 {
		return
	}
	c.wantRead = true
	rm.tr.Event("resume", c.fd, "reading: %d pending < %d (a quarter of the limit)", c.due, rm.maxQueue/4)
	unheard := c.unheard
	c.unheard = nil
	rm.hear(c, unheard)
	if c.due > 0 && !c.blocked && !c.wantClose {
		// Its replies go now: its socket has space, and, edge-triggered, no new event would say so.
		rm.send(c)
	}
}

// send writes what c is to receive, until it has it all or the socket is full: the loop said c is
// writable, so the first write takes something (B6); each write may take less than it was given, and
// the rest waits, in order, for the next time c is writable (B7).
func (rm *room) send(c *conn) {
	tr := rm.tr
	before := c.due
	c.blocked, c.roomy = false, false
	for c.due > 0 {
		n, err := c.sendResult(rm.next(c))
		if errors.Is(err, unix.EAGAIN) {
			tr.Again(c.fd, "write") // the socket's buffer is full: wait until the loop says it has space
			c.blocked = true
			break
		}
		if err != nil {
			// ECONNRESET or EPIPE: the client reset the connection, nobody will read the rest (B9).
			// B11: a failed write takes the member out of the room like an EOF does.
			tr.Error(c.fd, "write", err)
			reason := "error"
			if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
				reason = "reset"
			}
			rm.leave(c, "left (connection reset)")
			rm.drop(c)
			end(c, reason, tr)
			return
		}
		tr.Write(c.fd, n, c.due)
		c.due -= n
		if len(c.asides) > 0 && c.asides[0].at == c.cursor && c.asides[0].text != nil {
			if c.sent += n; c.sent == len(c.asides[0].text) {
				c.asides, c.sent = c.asides[1:], 0
			}
		} else {
			c.cursor += n
		}
	}
	tr.Unqueue(c.fd, before-c.due, c.due)
	if c.due == 0 {
		c.cursor, c.asides, c.wantWrite = rm.head(), nil, false // skips still ahead are passed at once
	}
	if c.left && c.due == 0 {
		end(c, "left", tr)
	}
}

// drop throws away what c still had to receive: c is going away.
func (rm *room) drop(c *conn) {
	if c.due > 0 {
		rm.tr.Event("drop", c.fd, "%d pending bytes", c.due)
	}
	c.cursor, c.asides, c.due, c.sent, c.unheard = rm.head(), nil, 0, 0, nil
}

// endTurn runs after each turn of the loop: it forgets the members the loop will close, and frees
// the part of the log every member has received.
func (rm *room) endTurn() {
	rm.putOutSlow(nil)
	before := len(rm.members)
	rm.members = slices.DeleteFunc(rm.members, func(c *conn) bool { return c.wantClose })
	if before > 0 && len(rm.members) == 0 && rm.said >= rm.maxQueue {
		// The room has just emptied after a lot was said. What it held is garbage now, but a loop that
		// waits allocates nothing, so no collection would run and the memory would stay with the
		// process (the fault matrix's fin-crowd row: 2.5 to 3 times the starting RSS after 10 s). One
		// collection now gives it back; a lone client coming and going says too little to pay for one.
		debug.FreeOSMemory()
		rm.said = 0
	}
	oldest := rm.head()
	for _, c := range rm.members {
		oldest = min(oldest, c.cursor)
	}
	switch freed := oldest - rm.base; {
	case freed == len(rm.log):
		rm.log, rm.base = nil, oldest // everyone has everything: the room holds nothing
	case freed > len(rm.log)/2:
		rm.log, rm.base = append([]byte(nil), rm.log[freed:]...), oldest // a smaller copy frees the rest
	}
}

// takeWoken returns the members whose wants changed outside their own turn since it was last called.
func (rm *room) takeWoken() []*conn {
	woken := rm.woken
	rm.woken = nil
	return woken
}

// stop tells the room that the server is stopping: the loop sends what is queued, then closes.
func (rm *room) stop() { rm.broadcast(nil, "* the server is stopping") }

// putOutSlow puts out every member noted by queued whose due bytes are at the limit or more and
// whose socket is full now (the kernel says it would not report it writable: asked at the moment, as
// the last write's EAGAIN may be old news, and short lines can fill a socket without any write coming
// up short), but for heard: the member whose line is being handled pauses instead (see hear). Waiting for a slow member would freeze the room, as the seed's
// sendall did (B13); keeping its bytes forever would let one member use up the server's memory. A
// burst of lines to a member that reads is not enough: its socket takes them on the next turn.
func (rm *room) putOutSlow(heard *conn) {
	for len(rm.behind) > 0 {
		c := rm.behind[0]
		rm.behind = rm.behind[1:]
		if c == heard || c.wantClose || c.due < rm.maxQueue || c.roomy {
			continue
		}
		if hasSpace(c.fd) {
			// Only a write takes space: until the next one, the answer holds, and a member noted on
			// every line of a long read costs one poll, not one per line (issue 22).
			c.roomy = true
			continue
		}
		rm.tr.Event("too-slow", c.fd, "socket full and %d bytes pending >= limit %d", c.due, rm.maxQueue)
		rm.leave(c, "was put out: too slow to read") // may note more members: the loop goes on
		rm.drop(c)
		end(c, "too slow", rm.tr)
		rm.woken = append(rm.woken, c)
	}
	rm.behind = nil
}

// hasSpace asks the kernel, without waiting, whether fd's socket would be reported writable. A socket
// stops being reported writable while a third of its buffer is still free, so a queue of short lines
// can fill it with writes that each took every byte: no EAGAIN, and blocked stays false.
func hasSpace(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	_, err := unix.Poll(fds, 0)
	return err != nil || fds[0].Revents&(unix.POLLOUT|unix.POLLERR|unix.POLLHUP) != 0
}
