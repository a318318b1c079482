//go:build linux

package main

// The chat room of step04, as goroutines: each member has a reader, which reads its lines and carries
// them out, and a writer, which sends what the room has queued for it. Readers and writers run at once,
// on several threads, and they all change the room: who is here, what each member is due. One mutex
// guards all of it (and the trace, which is part of it): a goroutine holds it while it handles what it
// read or what it wrote, never while it waits for a socket. So the room's handlers run one at a time,
// as the loop ran them, and each one is step04's, only with net's errors.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// room is who is here and what each is due, and the limits that keep one member from costing the
// others. Everything in it, and in its members, is guarded by mu.
//
// As in step04, a line said to the room is stored once, in the room's log, however many members it
// goes to, and each member has a cursor into the log; a line for one member alone is an aside of that
// member's (see step04's room.go). A writer writes a piece of the log outside the mutex: the log's
// bytes never change once said, and freeing the log makes a new one, so the piece stays as it was.
type room struct {
	mu       sync.Mutex
	members  []*member // in the room or on the way out, in order of arrival
	guests   int       // default names handed out so far: guest1, guest2, ...
	maxLine  int
	maxQueue int
	tr       *tracing.Recorder
	stopping bool // a signal came: nothing more is heard, what is queued is sent, then all close

	log    []byte    // what was said to the room and some member has still to receive
	base   int       // the log position of log[0]: how much of the log was freed before it
	freeAt int       // the log's length at which to look for bytes everyone has (see freeLog)
	behind []*member // members whose due bytes reached -maxqueue: see putOutSlow
	said   int       // bytes queued since the room last gave its memory back (see end)
}

// member is one member: its socket, its name, and where it is in what the room said.
type member struct {
	conn    net.Conn
	fd      int // what the trace names it by
	name    string
	in      framer  // the line being received, until its newline arrives (only its reader uses it)
	cursor  int     // the log position of the next byte of the room's log it is to receive
	asides  []aside // lines for it alone, and stretches of the log it skips, in log order
	sent    int     // how much of its first aside's text is written already
	due     int     // bytes it still has to receive: the log from its cursor, less skips, plus asides
	writing int     // how many bytes its writer is writing, outside the mutex (0: it is not)
	paused  bool    // its reader waits: its own replies reached -maxqueue (see hear)
	left    bool    // out of the room: nothing more is heard; it closes once it has its due bytes
	lingers bool    // the server is stopping and has sent it all and a FIN (see send)
	closed  bool    // its socket is closed: both goroutines end, saying nothing more
	// changed wakes its writer (bytes are due, or it is closed) and its paused reader. It is a
	// condition of the room's mutex: whoever waits on it lets go of the room meanwhile.
	changed *sync.Cond
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

// serve greets a new member and starts its reader and writer.
func (rm *room) serve(conn net.Conn, fd int, clients *sync.WaitGroup) {
	rm.mu.Lock()
	defer rm.unlock()
	// A newcomer hears what is said from now on, not before.
	m := &member{conn: conn, fd: fd, changed: sync.NewCond(&rm.mu), in: framer{max: rm.maxLine}, cursor: rm.head()}
	rm.tr.Accept(fd)
	if rm.stopping { // it came in as the listener closed
		rm.end(m, "shutdown")
		return
	}
	for m.name == "" || rm.find(m.name) != nil { // someone may have taken guestN with /nick
		rm.guests++
		m.name = fmt.Sprintf("guest%d", rm.guests)
	}
	rm.members = append(rm.members, m)
	rm.tr.Event("join", fd, "as %s", m.name)
	rm.say(m, "* welcome, "+m.name+"; "+help)
	rm.broadcast(m, "* "+m.name+" joined")
	clients.Go(func() { rm.receive(m) })
	clients.Go(func() { rm.send(m) }) // before putOutSlow, which may wait for any writer, this one too
	rm.putOutSlow(nil)
}

// unlock lets go of the room. What was queued goes into the trace first: a line another goroutine
// writes next must come after it, as it happened after it.
func (rm *room) unlock() {
	rm.tr.Flush()
	rm.mu.Unlock()
}

// wait lets go of the room until something about m changes (see member.changed), writing the trace
// lines it holds first, as unlock does.
func (rm *room) wait(m *member) {
	rm.tr.Flush()
	m.changed.Wait()
}

// receive is m's reader: it reads what m sends, in the member's own 4 KiB, and hears it.
func (rm *room) receive(m *member) {
	buf := make([]byte, 4<<10)
	for {
		n, err := m.conn.Read(buf) // parks this goroutine until m's socket is readable
		rm.mu.Lock()
		more := rm.read(m, buf[:n], err)
		rm.unlock()
		if !more {
			return
		}
	}
}

// read handles one read's result: the bytes, then the error. It reports whether to read on.
func (rm *room) read(m *member, p []byte, err error) bool {
	tr := rm.tr
	switch {
	case m.closed:
		return false // put out, or the grace ended: its socket was closed under the read
	case rm.stopping:
		// Nobody is heard any more: what m still sends is thrown away until it closes (see send).
		if len(p) > 0 {
			tr.Read(m.fd, p)
		}
		if err != nil {
			rm.readError(m, err)
			rm.end(m, "shutdown")
		}
		return err == nil
	case len(p) > 0:
		tr.Read(m.fd, p)
		// B14: a read is not a message. The framer joins a line split over reads and splits several lines.
		rm.hear(m, m.in.feed(p))
		return !m.left && !m.closed
	case errors.Is(err, io.EOF) && !wasReset(m.conn):
		// B1, B11: EOF. A last line sent without a newline still counts.
		tr.ReadEOF(m.fd)
		if line, ok := m.in.rest(); ok {
			rm.handle(m, line)
		}
		rm.leave(m, "left")
		rm.putOutSlow(nil)
		if m.due == 0 {
			rm.end(m, "EOF")
			return false
		}
		// FIN ends what the client sends, not what it reads (it may have half-closed): finish sending.
		tr.Event("finish", m.fd, "%d bytes still to send, then close", m.due)
		return false
	default:
		// An error, or an end that was a reset: its error went to m's writer, whose write failed at
		// the same moment, and this read saw only the end.
		reason := rm.readError(m, err)
		if errors.Is(err, io.EOF) {
			reason = "reset"
		}
		rm.leave(m, "left (connection reset)")
		rm.drop(m)
		rm.end(m, reason)
		rm.putOutSlow(nil)
		return false
	}
}

// readError traces a failed read (or EOF) and returns the reason to close with.
func (rm *room) readError(m *member, err error) string {
	if errors.Is(err, io.EOF) {
		rm.tr.ReadEOF(m.fd)
		return "EOF"
	}
	rm.tr.Error(m.fd, "read", err)
	if errors.Is(err, unix.ECONNRESET) {
		return "reset"
	}
	return "error"
}

// hear handles m's lines in order. A member whose own due bytes reach the limit (a flood of /who,
// whose replies are bigger than the commands) is heard no more for now: its reader waits, reading
// nothing, until its writer has sent its bytes below a quarter of the limit. The wait lets go of the
// room (the writer needs it); its replies cannot outgrow the limit by more than one line's.
func (rm *room) hear(m *member, frames []frame) {
	for _, f := range frames {
		if m.due >= rm.maxQueue && !m.left {
			m.paused = true
			rm.tr.Event("pause", m.fd, "reading: %d pending >= limit %d", m.due, rm.maxQueue)
			for m.paused && !m.closed && !rm.stopping {
				rm.wait(m)
			}
		}
		if m.left || m.closed || rm.stopping {
			return // after /quit, or once put out or stopping, nothing more is heard
		}
		if f.tooLong {
			rm.tr.Event("too-long", m.fd, "line over %d bytes: refused, skipped to its newline", rm.maxLine)
			rm.say(m, fmt.Sprintf("* line too long (over %d bytes): not sent; the lines around it were", rm.maxLine))
		} else {
			rm.handle(m, f.line)
		}
		rm.putOutSlow(m) // before the next line: nobody else's queue outgrows the limit by more than a line
	}
}

// handle carries out one line from m: a command, or something to say to the room.
func (rm *room) handle(m *member, line string) {
	line = clean(line) // no control characters or broken UTF-8 reach anyone's terminal
	if strings.TrimSpace(line) == "" {
		return
	}
	cmd, problem := parseCommand(line)
	switch {
	case problem != "":
		rm.say(m, "* "+problem)
	case cmd.verb == "say":
		rm.broadcast(m, m.name+": "+cmd.text)
	case cmd.verb == "nick":
		if other := rm.find(cmd.name); other != nil && other != m {
			rm.say(m, "* the name "+cmd.name+" is taken")
			return
		}
		if cmd.name == m.name {
			rm.say(m, "* you are "+m.name+" already")
			return
		}
		old := m.name
		m.name = cmd.name
		rm.tr.Event("nick", m.fd, "%s is now %s", old, m.name)
		rm.say(m, "* you are now "+m.name)
		rm.broadcast(m, "* "+old+" is now "+m.name)
	case cmd.verb == "who":
		var names []string
		for _, o := range rm.members {
			if !o.left {
				names = append(names, o.name)
			}
		}
		rm.say(m, "* in the room: "+strings.Join(names, ", "))
	case cmd.verb == "msg":
		to := rm.find(cmd.name)
		if to == nil {
			rm.say(m, "* nobody here is called "+cmd.name)
			return
		}
		rm.say(to, m.name+" (private): "+cmd.text)
		if to != m {
			rm.say(m, "* to "+to.name+" (private): "+cmd.text) // what was sent, and to whom
		}
	case cmd.verb == "help":
		rm.say(m, fmt.Sprintf("* %s; lines up to %d bytes", help, rm.maxLine))
	case cmd.verb == "quit":
		rm.say(m, "* bye")
		rm.leave(m, "left")
	}
}

// find returns the member called name (names are unique regardless of case), or nil.
func (rm *room) find(name string) *member {
	for _, m := range rm.members {
		if !m.left && strings.EqualFold(m.name, name) {
			return m
		}
	}
	return nil
}

// leave takes m out of the room, once, and tells the others with m's own name (B10, B11): however a
// member goes (EOF, reset, a failed write, /quit, too slow), the room hears it exactly once.
func (rm *room) leave(m *member, how string) {
	if m.left {
		return
	}
	m.left = true
	rm.tr.Event("leave", m.fd, "%s %s", m.name, how)
	rm.broadcast(m, "* "+m.name+" "+how)
}

// broadcast says line to every member of the room but from: the line goes into the room's log once,
// and every member's due bytes grow by its length. It writes nothing, so nobody waits for a slow
// member (B13), and it removes nobody from the list it walks, so nobody is skipped (B12).
func (rm *room) broadcast(from *member, line string) {
	at := rm.head()
	rm.log = append(append(rm.log, line...), '\n')
	n := len(line) + 1
	for _, m := range rm.members {
		if m == from || m.left {
			m.skip(at, n)
		} else {
			rm.queued(m, n)
		}
	}
	if len(rm.log) >= rm.freeAt {
		rm.freeLog()
	}
}

// say queues one line for m alone, as an aside at the log's head. It never writes.
func (rm *room) say(m *member, line string) {
	if last := len(m.asides) - 1; last >= 0 && m.asides[last].text != nil && m.asides[last].at == rm.head() {
		m.asides[last].text = append(append(m.asides[last].text, line...), '\n') // one piece: one write
	} else {
		m.asides = append(m.asides, aside{at: rm.head(), text: append([]byte(line), '\n')})
	}
	rm.queued(m, len(line)+1)
}

// queued counts n more bytes due to m, wakes m's writer, and notes m for putOutSlow when its due
// bytes reach the limit.
func (rm *room) queued(m *member, n int) {
	rm.said += n
	m.due += n
	rm.tr.Queue(m.fd, n, m.due)
	if m.due >= rm.maxQueue {
		rm.behind = append(rm.behind, m)
	}
	m.changed.Broadcast()
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

// passSkips moves m's cursor past the stretches of the log it skips that start at it.
func (m *member) passSkips() {
	for len(m.asides) > 0 && m.asides[0].at == m.cursor && m.asides[0].text == nil {
		m.cursor += m.asides[0].skip
		m.asides = m.asides[1:]
	}
}

// next returns the bytes m is to receive next, in one piece: an aside's line, or the log up to the
// next aside. Skips at its cursor are passed on the way.
func (rm *room) next(m *member) []byte {
	m.passSkips()
	if len(m.asides) > 0 && m.asides[0].at == m.cursor {
		return m.asides[0].text[m.sent:]
	}
	end := rm.head()
	if len(m.asides) > 0 {
		end = m.asides[0].at
	}
	return rm.log[m.cursor-rm.base : end-rm.base]
}

// wrote moves m on by the n bytes its writer has written from the piece next gave it. Meanwhile its
// asides may have moved (see skip): the skips now in front of the piece were passed before it.
func (rm *room) wrote(m *member, n int) {
	m.due -= n
	m.passSkips()
	if len(m.asides) > 0 && m.asides[0].at == m.cursor {
		if m.sent += n; m.sent == len(m.asides[0].text) {
			m.asides, m.sent = m.asides[1:], 0
		}
	} else {
		m.cursor += n
	}
	if m.due == 0 {
		m.cursor, m.asides = rm.head(), nil // skips still ahead are passed at once
	}
}

// freeLog frees the part of the log every member has received. It walks every member, so it runs
// when the log has doubled since it last ran, not on every line: its cost stays one step per line.
func (rm *room) freeLog() {
	oldest := rm.head()
	for _, o := range rm.members {
		oldest = min(oldest, o.cursor)
	}
	switch freed := oldest - rm.base; {
	case freed == len(rm.log):
		rm.log, rm.base = nil, oldest // everyone has everything: the room holds nothing
	case freed > len(rm.log)/2:
		rm.log, rm.base = append([]byte(nil), rm.log[freed:]...), oldest // a smaller copy frees the rest
	}
	rm.freeAt = max(2*len(rm.log), 4<<10)
}

// maxPiece bounds one write: what a member is due counts down when a Write returns, so a writer that
// handed over all of it at once would leave the room knowing nothing until the member had it all.
const maxPiece = 16 << 10

// send is m's writer: it waits until m is due something and writes it, piece by piece, until m is
// closed. Write returns when the kernel has taken every byte: while m's socket is full, the runtime
// parks this goroutine on it (step05's EPOLLOUT), and the room goes on without it.
func (rm *room) send(m *member) {
	rm.mu.Lock()
	defer rm.unlock()
	for {
		for m.due == 0 && !m.closed {
			rm.wait(m)
		}
		if m.closed {
			return
		}
		piece := rm.next(m)
		piece = piece[:min(len(piece), maxPiece)]
		m.writing = len(piece)
		m.changed.Broadcast() // a reader waiting in putOutSlow may look at m's socket now
		rm.unlock()
		n, err := m.conn.Write(piece)
		rm.mu.Lock()
		m.writing = 0
		if m.closed {
			return // put out, or the grace ended, while it wrote: the error, if any, is its closed socket
		}
		if err != nil {
			// ECONNRESET or EPIPE: the client reset the connection, nobody will read the rest (B9).
			// B11: a failed write takes the member out of the room like an EOF does.
			rm.tr.Error(m.fd, "write", err)
			reason := "error"
			if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
				reason = "reset"
			}
			rm.leave(m, "left (connection reset)")
			rm.drop(m)
			rm.end(m, reason)
			rm.putOutSlow(nil)
			return
		}
		rm.tr.Write(m.fd, n, m.due)
		rm.wrote(m, n)
		rm.tr.Unqueue(m.fd, n, m.due)
		if m.paused && m.due < rm.maxQueue/4 {
			m.paused = false
			rm.tr.Event("resume", m.fd, "reading: %d pending < %d (a quarter of the limit)", m.due, rm.maxQueue/4)
			m.changed.Broadcast()
		}
		switch {
		case m.due > 0:
		case m.left:
			rm.end(m, "left")
			return
		case rm.stopping && !m.lingers:
			// Everything is sent: close gently (step05's signals.go). FIN now; the reader throws away
			// what the client still sends, and closes when it closes.
			m.conn.(*net.TCPConn).CloseWrite()
			m.lingers = true
			rm.tr.Event("linger", m.fd, "all sent, FIN sent: reading until the client closes")
		}
	}
}

// drop throws away what m still had to receive: m is going away.
func (rm *room) drop(m *member) {
	if m.due > 0 {
		rm.tr.Event("drop", m.fd, "%d pending bytes", m.due)
	}
	m.cursor, m.asides, m.due, m.sent = rm.head(), nil, 0, 0
}

// end closes m's socket, for the reason the trace gives, and forgets m. Its reader and writer, parked
// on the socket or waiting for the room, wake up to find it closed and end (B2: its fd is given back).
func (rm *room) end(m *member, reason string) {
	if m.closed {
		return
	}
	m.closed, m.left = true, true
	rm.tr.Close(m.fd, reason) // before Close: the kernel may give the fd number to the next client
	m.conn.Close()
	m.changed.Broadcast()
	before := len(rm.members)
	rm.members = slices.DeleteFunc(rm.members, func(o *member) bool { return o == m })
	if len(rm.members) == 0 {
		rm.log, rm.base = nil, rm.head()
	}
	if before > 0 && len(rm.members) == 0 && rm.said >= rm.maxQueue {
		// The room has just emptied after a lot was said: give the memory back (see step05's room.go).
		debug.FreeOSMemory()
		rm.said = 0
	}
}

// stop tells the room that the server is stopping: nobody is heard any more, the room is told, and
// each member is closed once it has everything (see send). closeListener runs under the room's lock,
// so its trace line comes before the room's.
func (rm *room) stop(sig syscall.Signal, closeListener func()) {
	rm.mu.Lock()
	defer rm.unlock()
	rm.tr.Note("signal", "%s: stop accepting, send what is queued (at most %v), then exit", unix.SignalName(sig), shutdownGrace)
	closeListener()
	rm.stopping = true
	rm.broadcast(nil, "* the server is stopping")
	for _, m := range rm.members {
		m.changed.Broadcast() // a paused reader stops waiting
	}
}

// closeAll closes every member still here: the grace is over.
func (rm *room) closeAll() {
	rm.mu.Lock()
	defer rm.unlock()
	for len(rm.members) > 0 {
		m := rm.members[0]
		rm.drop(m)
		rm.end(m, "shutdown")
	}
}

// putOutSlow puts out every member noted by say whose bytes not yet handed to its writer are at the
// limit or more and whose socket is full now (its writer is parked in Write), but for heard: the
// member whose line is being handled pauses instead (see hear). Waiting for a slow member would freeze
// the room, as the seed's sendall did (B13); keeping its bytes forever would let it use up the
// server's memory. (A Write parked on a full socket has handed the kernel part of its piece already,
// and nobody can know how much: the piece is left out of the count, and at most maxPiece more is held.)
//
// A member past the limit whose writer has not yet taken a piece is not slow: its writer has not had
// the room's mutex, which this goroutine, reading line after line, kept taking first. Asking its
// socket would find it empty. So the caller waits, letting go of the room, until the writer has taken
// a piece: a sender cannot outrun the writers by more than a line, and then the socket's answer counts.
func (rm *room) putOutSlow(heard *member) {
	for len(rm.behind) > 0 {
		m := rm.behind[0]
		rm.behind = rm.behind[1:]
		for m != heard && m.due >= rm.maxQueue && m.writing == 0 && !m.closed && !rm.stopping {
			rm.wait(m)
		}
		if m == heard || m.closed || m.due-m.writing < rm.maxQueue || hasSpace(m.conn) {
			continue
		}
		rm.tr.Event("too-slow", m.fd, "socket full and %d bytes pending >= limit %d", m.due-m.writing, rm.maxQueue)
		rm.leave(m, "was put out: too slow to read") // may note more members: the loop goes on
		rm.drop(m)
		rm.end(m, "too slow")
	}
}

// refuse tells a client the room cannot take it (the server is out of fds) and closes it.
func (rm *room) refuse(c net.Conn, fd int) {
	rm.mu.Lock()
	defer rm.unlock()
	rm.tr.Accept(fd)
	c.Write([]byte("* the room is full: the server is out of file descriptors, try again later\n"))
	rm.tr.Close(fd, "refused: out of fds")
	c.Close()
}

// acceptError traces a failed accept.
func (rm *room) acceptError(fd int, err error) {
	rm.mu.Lock()
	defer rm.unlock()
	rm.tr.Error(fd, "accept", err)
}

// wasReset asks the kernel whether c's connection was reset rather than ended with a FIN: a socket
// that received a FIN waits for us to close (CLOSE_WAIT), a reset one is closed already (TCP_CLOSE).
// Two goroutines use m's socket, and a reset's error is given to whichever system call comes first.
func wasReset(c net.Conn) bool {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return false
	}
	reset := false
	raw.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		reset = err == nil && info.State == tcpClose
	})
	return reset
}

// tcpClose is TCP_CLOSE, the state of a connection that is over, from the kernel's include/net/tcp_states.h.
const tcpClose = 7

// hasSpace asks the kernel, without waiting, whether c's socket would be reported writable (step05's
// question, asked with poll(2) on the fd under c). A writer parked in Write means no; so does a queue of
// short lines that filled the socket before the writer came back for more.
func hasSpace(c net.Conn) bool {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return true
	}
	space := true
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(fds, 0); err == nil {
			space = fds[0].Revents&(unix.POLLOUT|unix.POLLERR|unix.POLLHUP) != 0
		}
	})
	return space
}
