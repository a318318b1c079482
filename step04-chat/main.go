//go:build linux || darwin

// Step 04: a chat room. Step 03's loop, with its write queues, now serves a room instead of an echo.
//
// This is the second seed's chat server (SelectServer) done right. Step 03 echoed: what a client sent
// went back to that client only. Here a line one member sends is queued for every other member, so a
// read on one socket fills the queues of all the others, and the loop writes each queue out when its
// socket is writable, exactly as in step 03. What is new is what the bytes mean: the stream from each
// member is cut into lines (protocol.go), a line is something to say or a command (/nick, /who, /msg,
// /quit), and every member has a name.
//
// What it fixes from the seed: messages and notices carry the sender's own name, not the last
// accepted client's (B10); EOF, a reset and a failed write each take a member out of the room with one
// notice (B11); a broadcast only queues, so it neither removes members from the list it walks (B12)
// nor waits for a slow one (B13); lines are framed, so a line split over two reads or two lines in one
// read are relayed as lines (B14); bytes stay bytes and an error on one member touches nobody else
// (B15); the address is loopback by default and a flag (B16). New here: a member whose queue reaches
// the limit (-maxqueue) is too slow for the room and is put out, so the room keeps moving and memory
// per member stays bounded. That replaces step 03's backpressure: pausing the reads of a member whose
// queue is full would only silence someone who is not the problem.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	_ "embed"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
)

// fdSetSize is FD_SETSIZE: an FdSet has one bit for each fd from 0 to 1023 (on Linux and macOS).
const fdSetSize = 1024

// shutdownGrace bounds how long a stopping server keeps sending what clients still have queued.
const shutdownGrace = 2 * time.Second

//go:embed scenarios/room.txt
var roomScenario string

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	trace := flag.Bool("trace", true, "write the trace to stdout")
	fds := flag.Bool("fds", false, "show fd numbers in the trace (they change from run to run)")
	sndbuf := flag.Int("sndbuf", 0, "if set, SO_SNDBUF for each client socket: small values show a slow reader sooner")
	maxLine := flag.Int("maxline", 1024, "longest line a member may send, in bytes; longer ones are refused")
	maxQueue := flag.Int("maxqueue", 64<<10, "a member whose socket is full with this many bytes still queued is too slow, and is put out")
	demo := flag.Bool("demo", false, "play three members chatting against this program and show the trace")
	flag.Parse()
	if *demo {
		os.Exit(replay.Demo(os.Stdout, "step04-chat", "scenarios/room.txt", roomScenario, "-fds="+fmt.Sprint(*fds)))
	}
	if *maxLine < 1 || *maxQueue < 1 {
		fmt.Fprintf(os.Stderr, "step04-chat: want -maxline (%d) and -maxqueue (%d) of at least 1\n", *maxLine, *maxQueue)
		os.Exit(2)
	}

	var tr *tracing.Recorder // nil: tracing off
	if *trace {
		tr = tracing.New(os.Stdout, *fds)
	}
	ln, bound, err := listen(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step04-chat: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step04-chat: listening on %s (try: go run ./step04-chat/client -addr %s)\n", bound, bound)
	tr.Listen(ln)
	sig, err := signalPipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "step04-chat: %v\n", err)
		os.Exit(1)
	}
	tr.Name(sig, "signals")
	rm := &room{maxLine: *maxLine, maxQueue: *maxQueue, tr: tr}
	if err := serve(ln, sig, *sndbuf, rm); err != nil {
		fmt.Fprintf(os.Stderr, "step04-chat: %v\n", err)
		os.Exit(1)
	}
}

// listen opens a TCP socket, binds it to addr and listens. The listener is nonblocking, so that an
// accept for a client that already left returns EAGAIN instead of blocking the loop.
func listen(addr string) (fd int, bound netip.AddrPort, err error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, bound, fmt.Errorf("-addr %q: want IP:port, e.g. 127.0.0.1:8000", addr)
	}
	family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	if ap.Addr().Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	if fd, err = unix.Socket(family, unix.SOCK_STREAM, 0); err != nil {
		return -1, bound, fmt.Errorf("socket: %w", err)
	}
	unix.CloseOnExec(fd)
	// SO_REUSEADDR lets a restarted server bind while old connections sit in TIME_WAIT.
	if err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err == nil {
		if err = unix.Bind(fd, sa); err == nil {
			if err = unix.Listen(fd, 128); err == nil {
				err = unix.SetNonblock(fd, true)
			}
		}
	}
	if err != nil {
		unix.Close(fd)
		return -1, bound, fmt.Errorf("listen on %s: %w", addr, err)
	}
	// With port 0 the kernel picked a free port: ask which.
	switch got, _ := unix.Getsockname(fd); got := got.(type) {
	case *unix.SockaddrInet4:
		bound = netip.AddrPortFrom(netip.AddrFrom4(got.Addr), uint16(got.Port))
	case *unix.SockaddrInet6:
		bound = netip.AddrPortFrom(netip.AddrFrom16(got.Addr), uint16(got.Port))
	}
	return fd, bound, nil
}

// signalPipe returns the read end of a pipe that receives one byte for each SIGINT or SIGTERM: the
// self-pipe trick. A loop asleep in select cannot wait on a Go channel, so os/signal's goroutine turns
// each signal into a byte on a pipe, and the loop watches the pipe like any socket.
func signalPipe() (int, error) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return -1, fmt.Errorf("pipe: %w", err)
	}
	for _, fd := range p {
		unix.CloseOnExec(fd)
		unix.SetNonblock(fd, true)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, unix.SIGINT, unix.SIGTERM)
	go func() {
		for sig := range signals {
			unix.Write(p[1], []byte{byte(sig.(unix.Signal))})
		}
	}()
	return p[0], nil
}

// conn is one client: its socket, its name in the room, the line it is sending, and the bytes the
// room has for it that have not been written yet.
type conn struct {
	fd   int
	name string // B10: every line and notice about this member uses this, the member's own name
	in   framer // the line being received, until its newline arrives
	out  []byte // the queue: lines for this member, in order; out[sent:] still has to be written
	sent int    // the cursor: how much of out is written already
	told int    // bytes queued since the trace last said so (see traceQueued)
	full bool   // the last write hit EAGAIN: the member's socket has no room, the queue waits on it
	left bool   // out of the room (EOF, /quit, an error): nothing more is read; close once the queue is empty
}

// pending is how many queued bytes still have to be written.
func (c *conn) pending() int { return len(c.out) - c.sent }

// busy reports whether c still has something to send.
func (c *conn) busy() bool { return c.pending() > 0 }

// room is what the loop shares between clients, which an echo server never needed: who is here, and
// the limits that keep one member from costing the others.
type room struct {
	clients  []*conn // connected clients, in order of arrival
	guests   int     // default names handed out so far: guest1, guest2, ...
	maxLine  int
	maxQueue int
	tr       *tracing.Recorder
}

// serve is the event loop: ask select which sockets are ready, handle exactly those, repeat. It
// returns when a signal has stopped it and every client is closed.
func serve(ln, sig, sndbuf int, rm *room) error {
	tr := rm.tr
	buf := make([]byte, 64<<10) // one buffer for every read: what must outlive the read is queued
	spare, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the spare fd: %w", err)
	}
	var stopBy time.Time // when stopping: the moment to give up on sending what is queued
	for {
		if !stopBy.IsZero() && (time.Now().After(stopBy) || !slices.ContainsFunc(rm.clients, (*conn).busy)) {
			for _, c := range rm.clients {
				drop(c, tr)
				unix.Close(c.fd)
				tr.Close(c.fd, "shutdown")
			}
			unix.Close(sig)
			unix.Close(spare)
			return nil
		}
		// Rebuild the sets every turn: select overwrites them with the result.
		reading, writing, top := []int{ln, sig}, []int{}, max(ln, sig)
		if !stopBy.IsZero() {
			reading = nil // stopping: nothing more is read or accepted, only what is queued is sent
		}
		for _, c := range rm.clients {
			if !c.left && stopBy.IsZero() {
				reading = append(reading, c.fd)
			}
			if c.pending() > 0 {
				writing = append(writing, c.fd) // the write list: only while there is something to write
			}
			top = max(top, c.fd)
		}
		var readable, writable unix.FdSet
		for _, fd := range reading {
			readable.Set(fd)
		}
		for _, fd := range writing {
			writable.Set(fd)
		}
		tr.Select(reading, writing, nil)
		if err := selectReady(top+1, &readable, &writable, stopBy); err != nil {
			return fmt.Errorf("select: %w", err)
		}
		tr.Selected(ready(reading, &readable), ready(writing, &writable), nil)

		// Handle what select reported, not what was asked (B6). A client ready both ways is read first,
		// then written: one turn serves both. A finished client is only marked (fd -1) during the walk;
		// clients changes after it (B8, B12), and since every list is rebuilt from clients, a client that
		// leaves clients has left every list (B9).
		for _, c := range rm.clients {
			open := true
			if readable.IsSet(c.fd) {
				open = rm.relay(c, buf)
			}
			if open && writable.IsSet(c.fd) {
				open = rm.flush(c)
			}
			if !open {
				unix.Close(c.fd) // B2: a finished client gives its fd back
				c.fd = -1
			}
		}
		// A new client has sent nothing yet: it joins the lists on the next turn.
		if stopBy.IsZero() && readable.IsSet(ln) {
			if c, ok := accept(ln, &spare, sndbuf, tr); ok {
				rm.join(c)
			}
		}
		rm.putOutSlow()
		rm.clients = slices.DeleteFunc(rm.clients, func(c *conn) bool { return c.fd < 0 })
		if stopBy.IsZero() && readable.IsSet(sig) {
			var b [1]byte
			unix.Read(sig, b[:])
			tr.Note("signal", "%s: stop accepting, send what is queued (at most %v), then exit", unix.SignalName(unix.Signal(b[0])), shutdownGrace)
			unix.Close(ln)
			tr.Close(ln, "shutdown")
			stopBy = time.Now().Add(shutdownGrace)
			rm.broadcast(nil, "* the server is stopping")
			rm.traceQueued()
		}
	}
}

// ready returns the fds of watched that select left set in set, in the order of watched.
func ready(watched []int, set *unix.FdSet) []int {
	var fds []int
	for _, fd := range watched {
		if set.IsSet(fd) {
			fds = append(fds, fd)
		}
	}
	return fds
}

// selectReady waits until a socket in read is readable or one in write is writable, with no timeout,
// or until deadline if it is set (when stopping). select returns EINTR when a signal arrives (the Go
// runtime sends them to preempt goroutines): then it asks again, with the original sets, because the
// kernel may have written into them, and with what is left of the time.
func selectReady(nfd int, read, write *unix.FdSet, deadline time.Time) error {
	askedRead, askedWrite := *read, *write
	for {
		var timeout *unix.Timeval
		if !deadline.IsZero() {
			tv := unix.NsecToTimeval(max(time.Until(deadline), 0).Nanoseconds())
			timeout = &tv
		}
		_, err := unix.Select(nfd, read, write, nil, timeout)
		if err != unix.EINTR {
			return err
		}
		*read, *write = askedRead, askedWrite
	}
}

// roomFull is all a client past FD_SETSIZE hears: this server cannot watch its fd.
const roomFull = "* the room is full: this server uses select, which cannot watch more than 1024 fds\n"

// accept takes one client from the listener. Its socket is nonblocking: see flush.
func accept(ln int, spare *int, sndbuf int, tr *tracing.Recorder) (*conn, bool) {
	fd, _, err := unix.Accept(ln)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ECONNABORTED) {
		tr.Again(ln, "accept") // the client left before we got to it
		return nil, false
	}
	if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
		// Out of fds. The client stays in the backlog, so the listener stays readable and select would
		// return at once, forever: a busy loop. Give back the spare fd, take the client with it, tell it
		// why, close it, and take the spare again.
		tr.Error(ln, "accept", err)
		unix.Close(*spare)
		if fd, _, err = unix.Accept(ln); err == nil {
			tr.Accept(fd)
			unix.Write(fd, []byte("* the room is full: the server is out of file descriptors, try again later\n"))
			unix.Close(fd)
			tr.Close(fd, "refused: out of fds")
		}
		*spare, _ = unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return nil, false
	}
	if err != nil {
		tr.Error(ln, "accept", err)
		return nil, false
	}
	unix.CloseOnExec(fd)
	unix.SetNonblock(fd, true) // a write takes what fits and returns, instead of stalling the loop (B3)
	// No Nagle: it holds a short write back until the previous one is acknowledged, and a member who
	// only listens acknowledges late (delayed ACK, up to 40 ms). Go's net package turns it off too.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	tr.Accept(fd)
	if fd >= fdSetSize {
		// FdSet.Set would panic (or, in C, write past the set). Refuse this one client; serve the rest (B19).
		// It never joined, so nobody else is told.
		unix.Write(fd, []byte(roomFull))
		unix.Close(fd)
		tr.Close(fd, "refused: fd past FD_SETSIZE")
		return nil, false
	}
	if sndbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	return &conn{fd: fd}, true
}

// relay reads what c sent, cuts it into lines and handles each: a line to say is queued for the
// others, a command is answered (see handle). It reports false when c is finished.
func (rm *room) relay(c *conn, buf []byte) bool {
	tr := rm.tr
	defer rm.traceQueued()
	n, err := unix.Read(c.fd, buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		tr.Again(c.fd, "read") // nothing after all: select will say when there is
		return true
	case errors.Is(err, unix.ECONNRESET):
		tr.Error(c.fd, "read", err)
		rm.leave(c, "left (connection reset)")
		drop(c, tr)
		tr.Close(c.fd, "reset")
		return false
	case err != nil:
		tr.Error(c.fd, "read", err)
		rm.leave(c, "left (error: "+tracing.ErrName(err)+")")
		drop(c, tr)
		tr.Close(c.fd, "error")
		return false
	case n == 0:
		// B1, B11: a read of 0 bytes is EOF. The seed ignored it, and select reported the socket readable
		// forever. A last line sent without a newline still counts.
		tr.ReadEOF(c.fd)
		if line, ok := c.in.rest(); ok {
			rm.handle(c, line)
		}
		rm.leave(c, "left")
		if c.pending() == 0 {
			tr.Close(c.fd, "EOF")
			return false
		}
		// FIN ends what the client sends, not what it reads (it may have half-closed): finish sending.
		tr.Event("finish", c.fd, "%d bytes still to send, then close", c.pending())
		return true
	}
	tr.Read(c.fd, buf[:n])
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
	return true
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
		for _, m := range rm.clients {
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
	for _, c := range rm.clients {
		if !c.left && strings.EqualFold(c.name, name) {
			return c
		}
	}
	return nil
}

// join gives a new client a default name, greets it and tells the others.
func (rm *room) join(c *conn) {
	for c.name == "" || rm.find(c.name) != nil { // someone may have taken guestN with /nick
		rm.guests++
		c.name = fmt.Sprintf("guest%d", rm.guests)
	}
	c.in.max = rm.maxLine
	rm.clients = append(rm.clients, c)
	rm.tr.Event("join", c.fd, "as %s", c.name)
	rm.say(c, "* welcome, "+c.name+"; "+help)
	rm.broadcast(c, "* "+c.name+" joined")
	rm.traceQueued()
}

// leave takes c out of the room, once, and tells the others with c's own name (B10, B11): however a
// member goes (EOF, reset, a failed write, /quit, too slow), the room hears it exactly once.
func (rm *room) leave(c *conn, how string) {
	if c.left {
		return
	}
	c.left = true
	rm.tr.Event("leave", c.fd, "%s %s", c.name, how)
	rm.broadcast(c, "* "+c.name+" "+how)
}

// broadcast queues line for every member of the room but from. It writes nothing, so nobody waits
// for a slow member (B13), and it removes nobody from the list it walks, so nobody is skipped (B12).
func (rm *room) broadcast(from *conn, line string) {
	for _, c := range rm.clients {
		if c != from && !c.left {
			rm.say(c, line)
		}
	}
}

// say queues one line for c. It never writes: the loop does, when select says c is writable.
func (rm *room) say(c *conn, line string) {
	// Bytes already sent are dropped first, so the queue holds only what is pending; only if there are
	// some: copying the whole queue onto itself for every line made each line cost as much as the queue.
	if c.sent > 0 {
		c.out = append(c.out[:0], c.out[c.sent:]...)
		c.sent = 0
	}
	c.out = append(append(c.out, line...), '\n')
	c.told += len(line) + 1
}

// traceQueued says, for each client, how much was queued for it since the last call: one line per
// client for all the lines of one read, however many there were.
func (rm *room) traceQueued() {
	for _, c := range rm.clients {
		if c.told > 0 && c.fd >= 0 {
			rm.tr.Queue(c.fd, c.told, c.pending())
		}
		c.told = 0
	}
}

// putOutSlow puts out, at the end of a turn, every member that does not read as fast as the room
// talks: its queue holds the limit or more and its socket is full (the last write hit EAGAIN, or the
// kernel says it has no room: short lines can fill a socket without any write coming up short).
// Waiting for it would freeze the room, as the seed's sendall did (B13); queueing forever would let
// one member use up the server's memory. A burst of lines to a member that reads is not enough: its
// socket takes them on the next turn. So a queue holds at most the limit plus what one turn brings.
func (rm *room) putOutSlow() {
	for _, c := range rm.clients {
		if c.fd >= 0 && c.pending() >= rm.maxQueue && (c.full || !hasRoom(c.fd)) {
			rm.tr.Event("too-slow", c.fd, "socket full and %d bytes pending >= limit %d", c.pending(), rm.maxQueue)
			rm.leave(c, "was put out: too slow to read")
			drop(c, rm.tr)
			unix.Close(c.fd)
			rm.tr.Close(c.fd, "too slow")
			c.fd = -1
			rm.traceQueued()
		}
	}
}

// flush writes c's queue from the cursor on, until the queue is empty or the socket is full: select
// said c is writable, so the first write takes something (B6); each write may take less than it was
// given, and the rest stays queued, in order, for the next time c is writable (B7). It reports false
// when c is finished.
func (rm *room) flush(c *conn) bool {
	tr := rm.tr
	defer rm.traceQueued() // a failed write tells the room
	before := c.pending()
	c.full = false
	for c.pending() > 0 {
		n, err := unix.Write(c.fd, c.out[c.sent:])
		if errors.Is(err, unix.EAGAIN) {
			tr.Again(c.fd, "write") // the socket's buffer is full: wait in select until it has room
			c.full = true
			break
		}
		if err != nil {
			// ECONNRESET or EPIPE: the client reset the connection, nobody will read the rest (B9).
			// B11: a failed write takes the member out of the room like an EOF does.
			tr.Error(c.fd, "write", err)
			rm.leave(c, "left (connection reset)")
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
		c.out, c.sent = nil, 0 // an idle client holds no buffer
	}
	if c.left && c.pending() == 0 {
		tr.Close(c.fd, "left")
		return false
	}
	return true
}

// drop throws away what c still had to receive: c is going away.
func drop(c *conn, tr *tracing.Recorder) {
	if c.pending() > 0 {
		tr.Event("drop", c.fd, "%d pending bytes", c.pending())
	}
	c.out, c.sent = nil, 0
}

// hasRoom asks the kernel, without waiting, whether fd's socket would be reported writable. A socket
// stops being reported writable while a third of its buffer is still free, so a queue of short lines
// can fill it with writes that each took every byte: no EAGAIN, and full stays false.
func hasRoom(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	_, err := unix.Poll(fds, 0)
	return err != nil || fds[0].Revents&(unix.POLLOUT|unix.POLLERR|unix.POLLHUP) != 0
}
