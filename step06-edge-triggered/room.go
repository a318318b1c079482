//go:build linux

package main

// The chat room: what the loop serves in this step. Its handlers (join, read, write, endTurn, stop)
// are called by the loop; they queue lines and say in each member's want fields what they want next,
// and never touch the multiplexer. protocol.go says what the bytes mean.

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// room is what the loop serves: who is here, and the limits that keep one member from costing the
// others, which an echo server never needed.
type room struct {
	members  []*conn // in the room or on the way out, in order of arrival
	guests   int     // default names handed out so far: guest1, guest2, ...
	maxLine  int
	maxQueue int
	tr       *tracing.Recorder
	woken    []*conn // members whose wants changed outside their own turn: epoll must be told of them
}

// join gives a new client a default name, greets it and tells the others.
func (rm *room) join(c *conn) {
	for c.name == "" || rm.find(c.name) != nil { // someone may have taken guestN with /nick
		rm.guests++
		c.name = fmt.Sprintf("guest%d", rm.guests)
	}
	c.in.max = rm.maxLine
	rm.members = append(rm.members, c)
	rm.tr.Event("join", c.fd, "as %s", c.name)
	rm.say(c, "* welcome, "+c.name+"; "+help)
	rm.broadcast(c, "* "+c.name+" joined")
}

// read reads what c sent, cuts it into lines and handles each: a line to say is queued for the
// others, a command is answered (see handle).
func (rm *room) read(c *conn, buf []byte) {
	tr := rm.tr
	n, err := unix.Read(c.fd, buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		tr.Again(c.fd, "read") // nothing after all: the loop will say when there is
		c.drained = true
		return
	case errors.Is(err, unix.ECONNRESET):
		tr.Error(c.fd, "read", err)
		rm.leave(c, "left (connection reset)")
		end(c, "reset", tr)
		return
	case err != nil:
		tr.Error(c.fd, "read", err)
		rm.leave(c, "left (error: "+tracing.ErrName(err)+")")
		end(c, "error", tr)
		return
	case n == 0:
		// B1, B11: a read of 0 bytes is EOF. The seed ignored it, and select reported the socket readable
		// forever. A last line sent without a newline still counts.
		tr.ReadEOF(c.fd)
		if line, ok := c.in.rest(); ok {
			rm.handle(c, line)
		}
		rm.leave(c, "left")
		if c.pending() == 0 {
			end(c, "EOF", tr)
			return
		}
		// FIN ends what the client sends, not what it reads (it may have half-closed): finish sending.
		tr.Event("finish", c.fd, "%d bytes still to send, then close", c.pending())
		return
	}
	tr.Read(c.fd, buf[:n])
	c.drained = n < len(buf) // a short read took all there was: for a stream socket, as good as EAGAIN
	// B14: a read is not a message. The framer joins a line split over reads and splits several lines.
	for _, f := range c.in.feed(buf[:n]) {
		if c.left {
			break // after /quit nothing more is read
		}
		if f.tooLong {
			tr.Event("too-long", c.fd, "line over %d bytes: refused, skipped to its newline", rm.maxLine)
			rm.say(c, fmt.Sprintf("* line too long (over %d bytes): not sent", rm.maxLine))
			continue
		}
		rm.handle(c, f.line)
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

// broadcast queues line for every member of the room but from. It writes nothing, so nobody waits
// for a slow member (B13), and it removes nobody from the list it walks, so nobody is skipped (B12).
func (rm *room) broadcast(from *conn, line string) {
	for _, c := range rm.members {
		if c != from && !c.left {
			rm.say(c, line)
		}
	}
}

// say queues one line for c. It never writes: it tells the loop that c wants to be written to.
func (rm *room) say(c *conn, line string) {
	// Bytes already sent are dropped first, so the queue holds only what is pending; only if there are
	// some: copying the whole queue onto itself for every line made each line cost as much as the queue.
	if c.sent > 0 {
		c.out = append(c.out[:0], c.out[c.sent:]...)
		c.sent = 0
	}
	c.out = append(append(c.out, line...), '\n')
	if !c.wantWrite {
		rm.woken = append(rm.woken, c)
	}
	c.wantWrite = true
	rm.tr.Queue(c.fd, len(line)+1, c.pending())
}

// write writes c's queue from the cursor on, until the queue is empty or the socket is full: the
// loop said c is writable, so the first write takes something (B6); each write may take less than it
// was given, and the rest stays queued, in order, for the next time c is writable (B7).
func (rm *room) write(c *conn) {
	tr := rm.tr
	before := c.pending()
	c.blocked = false
	for c.pending() > 0 {
		n, err := unix.Write(c.fd, c.out[c.sent:])
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
			end(c, reason, tr)
			return
		}
		tr.Write(c.fd, n, c.pending())
		c.sent += n
	}
	tr.Unqueue(c.fd, before-c.pending(), c.pending())
	if c.pending() == 0 {
		c.out, c.sent, c.wantWrite = nil, 0, false // an idle member holds no buffer
	}
	if c.left && c.pending() == 0 {
		end(c, "left", tr)
	}
}

// endTurn runs after each turn of the loop: it puts out the members too slow for the room, and
// forgets the members the loop will close.
func (rm *room) endTurn() {
	rm.putOutSlow()
	rm.members = slices.DeleteFunc(rm.members, func(c *conn) bool { return c.wantClose })
}

// takeWoken returns the members whose wants changed outside their own turn since it was last called.
func (rm *room) takeWoken() []*conn {
	woken := rm.woken
	rm.woken = nil
	return woken
}

// stop tells the room that the server is stopping: the loop sends what is queued, then closes.
func (rm *room) stop() { rm.broadcast(nil, "* the server is stopping") }

// putOutSlow puts out every member that does not read as fast as the room talks: its queue holds the
// limit or more and its socket is full (the last write hit EAGAIN, or the kernel says it has no
// space: short lines can fill a socket without any write coming up short). Waiting for it would
// freeze the room, as the seed's sendall did (B13); queueing forever would let one member use up the
// server's memory. A burst of lines to a member that reads is not enough: its socket takes them on
// the next turn. So a queue holds at most the limit plus what one turn brings.
func (rm *room) putOutSlow() {
	for _, c := range rm.members {
		if !c.wantClose && c.pending() >= rm.maxQueue && (c.blocked || !hasSpace(c.fd)) {
			rm.tr.Event("too-slow", c.fd, "socket full and %d bytes pending >= limit %d", c.pending(), rm.maxQueue)
			rm.leave(c, "was put out: too slow to read")
			end(c, "too slow", rm.tr)
			rm.woken = append(rm.woken, c)
		}
	}
}

// hasSpace asks the kernel, without waiting, whether fd's socket would be reported writable. A socket
// stops being reported writable while a third of its buffer is still free, so a queue of short lines
// can fill it with writes that each took every byte: no EAGAIN, and blocked stays false.
func hasSpace(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	_, err := unix.Poll(fds, 0)
	return err != nil || fds[0].Revents&(unix.POLLOUT|unix.POLLERR|unix.POLLHUP) != 0
}
