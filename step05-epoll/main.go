//go:build linux

// Step 05: one thread serves every client, with epoll. The handlers stay; only the loop changes.
//
// select (steps 02 to 04) is handed every watched fd on every call, in bitmaps of 1024 bits, and the
// kernel scans them all, however few are ready. epoll keeps the watched fds in the kernel, in an
// interest list: the loop registers a socket once (epoll_ctl ADD), changes what it asks only when that
// changes (MOD: EPOLLOUT while the client's queue holds bytes, like step03's write list), and each
// epoll_wait returns just the ready ones. A wait costs what is ready, not what is connected, and there
// is no FD_SETSIZE: this server takes clients past fd 1023 (B19 is gone, not worked around).
//
// It serves step04's chat room or, with -echo, step03's echo: the same handlers on the new loop.
// Level-triggered by default (epoll reports a socket on every wait while it is ready, as select does);
// with -et, edge-triggered (once each time it becomes ready), and then every read, accept and write
// goes on until the socket is drained. When the process runs out of fds (EMFILE), a spare fd lets it
// refuse the client with a message instead of spinning on a listener that stays ready.
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

// shutdownGrace bounds how long a stopping server keeps sending what clients still have queued.
const shutdownGrace = 2 * time.Second

//go:embed scenarios/room.txt
var roomScenario string

//go:embed scenarios/echo-seed.txt
var echoScenario string

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	trace := flag.Bool("trace", true, "write the trace to stdout")
	fds := flag.Bool("fds", false, "show fd numbers in the trace (they change from run to run)")
	echoing := flag.Bool("echo", false, "serve step03's echo instead of step04's chat room")
	et := flag.Bool("et", false, "edge-triggered: epoll reports a socket once each time it becomes ready, and the loop reads, accepts and writes until the socket is drained")
	sndbuf := flag.Int("sndbuf", 0, "if set, SO_SNDBUF for each client socket: small values show a slow reader sooner")
	maxLine := flag.Int("maxline", 1024, "chat: longest line a member may send, in bytes; longer ones are refused")
	maxQueue := flag.Int("maxqueue", 64<<10, "chat: a member with this many bytes waiting to be sent to it is too slow, and is put out")
	high := flag.Int("highwater", 64<<10, "echo: stop reading from a client while this many bytes wait to be sent back to it")
	low := flag.Int("lowwater", 16<<10, "echo: read from a paused client again once fewer than this many bytes wait")
	demo := flag.Bool("demo", false, "play three members chatting (with -echo: the seed's steps) against this program and show the trace")
	flag.Parse()
	if *demo {
		name, text := "scenarios/room.txt", roomScenario
		if *echoing {
			name, text = "scenarios/echo-seed.txt", echoScenario
		}
		os.Exit(replay.Demo(os.Stdout, "step05-epoll", name, text,
			"-fds="+fmt.Sprint(*fds), "-echo="+fmt.Sprint(*echoing), "-et="+fmt.Sprint(*et)))
	}
	if *maxLine < 1 || *maxQueue < 1 {
		fmt.Fprintf(os.Stderr, "step05-epoll: want -maxline (%d) and -maxqueue (%d) of at least 1\n", *maxLine, *maxQueue)
		os.Exit(2)
	}
	if *low < 1 || *low > *high {
		fmt.Fprintf(os.Stderr, "step05-epoll: want 1 <= -lowwater (%d) <= -highwater (%d)\n", *low, *high)
		os.Exit(2)
	}

	var tr *tracing.Recorder // nil: tracing off
	if *trace {
		tr = tracing.New(os.Stdout, *fds)
	}
	ln, bound, err := listen(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step05-epoll: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step05-epoll: listening on %s (try: go run ./step04-chat/client -addr %s)\n", bound, bound)
	tr.Listen(ln)
	sig, err := signalPipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "step05-epoll: %v\n", err)
		os.Exit(1)
	}
	tr.Name(sig, "signals")
	p, err := newPoller(*et, tr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step05-epoll: %v\n", err)
		os.Exit(1)
	}
	buf := make([]byte, 64<<10) // one buffer for every read: what must outlive the read is queued
	var svc service
	if *echoing {
		svc = service{
			read:  func(c *conn) bool { return echo(c, buf, *high, tr) },
			write: func(c *conn) bool { return flush(c, *low, tr) },
			full:  "server busy: out of file descriptors, try again later\n",
		}
	} else {
		rm := &room{maxLine: *maxLine, maxQueue: *maxQueue, tr: tr, p: p}
		svc = service{
			join:  rm.join,
			read:  func(c *conn) bool { return rm.relay(c, buf) },
			write: rm.flush,
			endTurn: func() {
				rm.putOutSlow()
				rm.clients = slices.DeleteFunc(rm.clients, func(c *conn) bool { return c.fd < 0 })
			},
			stop: func() {
				rm.broadcast(nil, "* the server is stopping")
				rm.traceQueued()
			},
			full: "* the room is full: the server is out of file descriptors, try again later\n",
		}
	}
	if err := serve(ln, sig, p, svc, *sndbuf); err != nil {
		fmt.Fprintf(os.Stderr, "step05-epoll: %v\n", err)
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
// self-pipe trick. A loop asleep in epoll_wait cannot wait on a Go channel, so os/signal's goroutine
// turns each signal into a byte on a pipe, and the loop watches the pipe like any socket.
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
// service has for it that have not been written yet. The echo uses paused and eof (as in step03)
// where the room uses name, in, told, full and left (as in step04); the loop uses events and drained.
type conn struct {
	fd   int
	name string // B10: every line and notice about this member uses this, the member's own name
	in   framer // the line being received, until its newline arrives
	out  []byte // the queue: lines for this member, in order; out[sent:] still has to be written
	sent int    // the cursor: how much of out is written already
	told int    // bytes queued since the trace last said so (see traceQueued)
	full bool   // the last write hit EAGAIN: the member's socket has no room, the queue waits on it
	left bool   // out of the room (EOF, /quit, an error): nothing more is read; close once the queue is empty

	paused bool // echo: the queue passed the high-water mark: not reading from this client for now
	eof    bool // echo: the client sent FIN: nothing more to read, close once the queue is empty

	events  uint32 // what epoll is asked about this client now
	drained bool   // the last read found the socket empty (EAGAIN, or fewer bytes than asked for)
}

// pending is how many queued bytes still have to be written.
func (c *conn) pending() int { return len(c.out) - c.sent }

// busy reports whether c still has something to send.
func (c *conn) busy() bool { return c.pending() > 0 }

// reading reports whether the service reads from c now.
func (c *conn) reading() bool { return !c.left && !c.paused && !c.eof }

// room is what the loop shares between clients, which an echo server never needed: who is here, and
// the limits that keep one member from costing the others.
type room struct {
	clients  []*conn // connected clients, in order of arrival
	guests   int     // default names handed out so far: guest1, guest2, ...
	maxLine  int
	maxQueue int
	tr       *tracing.Recorder
	p        *poller // told when a broadcast fills another member's queue, or a member is put out
}

// A service is what the loop serves: the room, or the echo. The loop knows nothing of what clients
// say: it calls join when a client is accepted, read when epoll reports it readable, write when its
// queue may be written (each reports false when the client is finished), endTurn after each turn, and
// stop when a signal stops the server. (The echo has no join, endTurn or stop.)
type service struct {
	join        func(c *conn)
	read, write func(c *conn) bool
	endTurn     func()
	stop        func()
	full        string // what a client hears when the server is out of fds
}

// poller is the loop's side of epoll: the epoll instance, how it is asked (level- or edge-triggered),
// and the clients in its interest list, by fd: epoll says which fd is ready, this says whose it is.
// A slice indexed by fd does that in 8 bytes a client: the kernel hands out the lowest free fd, so
// the numbers stay dense, as in its own fd table.
type poller struct {
	ep         int
	mode       uint32  // 0: level-triggered; EPOLLET: edge-triggered
	registered int     // how many fds the interest list holds (listener and signals included)
	clients    []*conn // clients[fd]: the client on fd, or nil
	touched    []*conn // clients whose queue a service filled outside their own turn (a broadcast)
	stopping   bool    // a signal came: nothing more is read or accepted, only what is queued is sent
	tr         *tracing.Recorder
}

// newPoller creates the epoll instance: an fd whose interest list lives in the kernel.
func newPoller(et bool, tr *tracing.Recorder) (*poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	p := &poller{ep: ep, tr: tr}
	if et {
		p.mode = unix.EPOLLET
	}
	return p, nil
}

// Events that send the loop to a handler. A reset or an error (ERR, HUP: epoll reports them unasked)
// goes to both, as select reported such a socket readable and writable: the call then fails and says why.
const (
	readEvents  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLERR | unix.EPOLLHUP
	writeEvents = unix.EPOLLOUT | unix.EPOLLERR | unix.EPOLLHUP
)

// serve is the event loop: register the listener and the signal pipe once, then ask epoll which
// sockets are ready, handle exactly those, and keep the interest list in step with what each client
// waits for. It returns when a signal has stopped it and every client is closed.
func serve(ln, sig int, p *poller, svc service, sndbuf int) error {
	tr := p.tr
	for _, fd := range []int{ln, sig} {
		if err := p.add(fd, unix.EPOLLIN|p.mode); err != nil {
			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	// One fd kept spare for the moment the others run out (see accept). The Go runtime opens an epoll
	// fd of its own the first time it needs a timer; if that moment came while the fds were out, the
	// runtime would die ("netpollinit failed"). A nanosecond's sleep makes it come now.
	time.Sleep(time.Nanosecond)
	spare, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the spare fd: %w", err)
	}
	var stopBy time.Time                   // when stopping: the moment to give up on sending what is queued
	events := make([]unix.EpollEvent, 128) // room for this many ready sockets per wait; more wait their turn
	for {
		if p.stopping && (time.Now().After(stopBy) || !p.anyBusy()) {
			for _, c := range p.byFD() {
				drop(c, tr)
				tr.Close(c.fd, "shutdown")
				p.forget(c)
			}
			unix.Close(sig)
			unix.Close(spare)
			return nil
		}
		tr.EpollWait(p.registered)
		n, err := epollWait(p.ep, events, stopBy)
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		tr.EpollReady(events[:n])

		// Only what is ready comes back: no list to rebuild, no scan over every client.
		for _, ev := range events[:n] {
			switch fd := int(ev.Fd); {
			case fd == ln && !p.stopping:
				for {
					c, more := accept(ln, &spare, sndbuf, svc.full, tr)
					if c != nil && p.watch(c) && svc.join != nil {
						svc.join(c)
					}
					if !more || p.mode != unix.EPOLLET {
						break // level-triggered: epoll reports the listener again while clients wait
					}
				}
			case fd == sig && !p.stopping:
				var b [1]byte
				unix.Read(sig, b[:])
				tr.Note("signal", "%s: stop accepting, send what is queued (at most %v), then exit", unix.SignalName(unix.Signal(b[0])), shutdownGrace)
				p.remove(ln)
				unix.Close(ln)
				tr.Close(ln, "shutdown")
				p.remove(sig)
				stopBy = time.Now().Add(shutdownGrace)
				p.stopping = true
				for _, c := range p.byFD() {
					p.touch(c) // none is read from any more
				}
				if svc.stop != nil {
					svc.stop()
				}
			case fd < len(p.clients) && p.clients[fd] != nil:
				c := p.clients[fd]
				open := true
				if !p.stopping && c.reading() && ev.Events&readEvents != 0 {
					// Edge-triggered, read until c is drained (EAGAIN or a short read), and if the event
					// says the client sent FIN, on to the read of 0 that says so: a FIN that came with
					// the last bytes is not news to epoll any more, and no later event would report it.
					fin := ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0
					for c.drained = false; open && c.reading() && (!c.drained || fin); {
						open = svc.read(c)
						if p.mode != unix.EPOLLET {
							break // level-triggered: epoll reports c again if more is waiting
						}
					}
				}
				// Write when epoll says c is writable, and also when c's queue has just filled and epoll
				// is not watching it for writing yet: a socket with room takes the bytes now, which saves
				// two epoll_ctl calls and a turn; if it has none, the write says EAGAIN and c is watched.
				// Not when c was paused in this turn: it stopped reading before EAGAIN, and under -et only
				// the MOD that asks for IN again when it resumes (after an OUT event) re-arms it.
				if open && c.pending() > 0 && (ev.Events&writeEvents != 0 || c.events&unix.EPOLLOUT == 0 && !c.paused) {
					open = svc.write(c) // writes until the queue is empty or EAGAIN, in either mode
				}
				if open {
					p.touch(c) // its reads and writes may have changed what it waits for
				} else {
					p.forget(c)
				}
			}
			if err := p.followTouched(); err != nil {
				return err
			}
		}
		if svc.endTurn != nil {
			svc.endTurn()
			if err := p.followTouched(); err != nil {
				return err
			}
		}
	}
}

// epollWait waits until something in the interest list is ready, with no timeout, or until deadline
// if it is set (when stopping), and returns how many events it wrote. A signal (the Go runtime sends
// them to preempt goroutines) ends the wait with EINTR and n = -1: then it asks again, with what is
// left of the time. Unlike select's sets, nothing it was given was overwritten.
func epollWait(ep int, events []unix.EpollEvent, deadline time.Time) (int, error) {
	for {
		timeout := -1 // milliseconds; -1: none
		if !deadline.IsZero() {
			timeout = int((max(time.Until(deadline), 0) + time.Millisecond - 1) / time.Millisecond)
		}
		n, err := unix.EpollWait(ep, events, timeout)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// interest is what epoll is asked about c, as step03 and step04 rebuilt their lists every turn:
// readable while the service reads from c (RDHUP: and say so when the client has sent FIN), writable
// while its queue is not empty. EPOLLOUT with an empty queue would wake the loop for nothing.
func (p *poller) interest(c *conn) uint32 {
	var events uint32
	if c.reading() && !p.stopping {
		events |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if c.pending() > 0 {
		events |= unix.EPOLLOUT
	}
	return events | p.mode
}

// add puts fd in the interest list, asking for events, and says so in the trace.
func (p *poller) add(fd int, events uint32) error {
	if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)}); err != nil {
		return err
	}
	p.registered++
	p.tr.EpollCtl(unix.EPOLL_CTL_ADD, fd, events)
	return nil
}

// remove takes fd out of the interest list. It is not traced: it always comes with a close line
// (DEL before close: epoll watches the open file, not the fd number, and a copy of it left open
// elsewhere, a dup or a child's, would keep its events coming for a number that is no longer ours).
func (p *poller) remove(fd int) {
	unix.EpollCtl(p.ep, unix.EPOLL_CTL_DEL, fd, nil)
	p.registered--
}

// watch adds a new client to the interest list. If the kernel cannot take one more (ENOMEM, or ENOSPC
// past fs.epoll.max_user_watches), the client is closed, and the others are served as before.
func (p *poller) watch(c *conn) bool {
	c.events = p.interest(c)
	if err := p.add(c.fd, c.events); err != nil {
		p.tr.Error(c.fd, "epoll_ctl", err)
		unix.Close(c.fd)
		p.tr.Close(c.fd, "error")
		return false
	}
	for len(p.clients) <= c.fd {
		p.clients = append(p.clients, nil) // append grows the slice by doubling: few copies
	}
	p.clients[c.fd] = c
	return true
}

// touch notes that c's queue changed outside c's own turn: the loop will update its registration.
func (p *poller) touch(c *conn) { p.touched = append(p.touched, c) }

// byFD returns the clients in order of fd: an order that is the same on every run, for the trace.
func (p *poller) byFD() []*conn {
	var cs []*conn
	for _, c := range p.clients {
		if c != nil {
			cs = append(cs, c)
		}
	}
	return cs
}

// anyBusy reports whether some client still has something to send.
func (p *poller) anyBusy() bool {
	for _, c := range p.clients {
		if c != nil && c.busy() {
			return true
		}
	}
	return false
}

// followTouched keeps the interest list in step with the clients touched since the last call: one
// epoll_ctl MOD for each whose wants changed, none for the others. Edge-triggered, a MOD also re-arms:
// if the client is ready already, the next wait reports it.
func (p *poller) followTouched() error {
	for _, c := range p.touched {
		want := p.interest(c)
		if c.fd < 0 || want == c.events {
			continue
		}
		if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: want, Fd: int32(c.fd)}); err != nil {
			return fmt.Errorf("epoll_ctl MOD: %w", err)
		}
		c.events = want
		p.tr.EpollCtl(unix.EPOLL_CTL_MOD, c.fd, want)
	}
	p.touched = p.touched[:0]
	return nil
}

// forget takes c out of the interest list, then closes it; the handler's close line stands for both.
func (p *poller) forget(c *conn) {
	p.remove(c.fd)
	unix.Close(c.fd) // B2: a finished client gives its fd back
	p.clients[c.fd] = nil
	c.fd = -1
}

// accept takes one client from the listener. Its socket is nonblocking: see flush. more is false when
// there was nobody to take (EAGAIN): edge-triggered, the loop accepts until then.
func accept(ln int, spare *int, sndbuf int, full string, tr *tracing.Recorder) (c *conn, more bool) {
	fd, err := accept4(ln)
	if errors.Is(err, unix.EAGAIN) {
		tr.Again(ln, "accept") // nobody is waiting (or the client left before we got to it)
		return nil, false
	}
	if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
		// Out of fds. The client stays in the backlog, so the listener stays ready: level-triggered,
		// epoll would report it on every wait, a busy loop; edge-triggered, the waiting clients would
		// hang. Give back the spare fd, take the client with it, tell it why, close it, and take the
		// spare again. No client to take (EAGAIN) ends an edge-triggered loop of accepts.
		tr.Error(ln, "accept", err)
		unix.Close(*spare)
		fd, err = accept4(ln)
		switch {
		case err == nil:
			tr.Accept(fd)
			unix.Write(fd, []byte(full))
			unix.Close(fd)
			tr.Close(fd, "refused: out of fds")
		case errors.Is(err, unix.EAGAIN):
			tr.Again(ln, "accept")
		default:
			tr.Error(ln, "accept", err)
		}
		*spare, _ = unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		return nil, err == nil
	}
	if err != nil {
		tr.Error(ln, "accept", err) // ECONNABORTED: that client left while it waited; take the next
		return nil, errors.Is(err, unix.ECONNABORTED)
	}
	// No Nagle: it holds a short write back until the previous one is acknowledged, and a member who
	// only listens acknowledges late (delayed ACK, up to 40 ms). Go's net package turns it off too.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	tr.Accept(fd)
	if sndbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	return &conn{fd: fd}, true
}

// accept4 is accept(2) with flags: the new socket is nonblocking (a write takes what fits and returns,
// instead of stalling the loop: B3) and close-on-exec from the start, which saves two system calls a
// client. It asks for no address: the trace names clients c1, c2, ..., and unix.Accept's 112-byte
// buffer for one would be garbage with every client, memory a server of 10,000 idle clients feels.
func accept4(ln int) (int, error) {
	fd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(ln), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// relay reads what c sent, cuts it into lines and handles each: a line to say is queued for the
// others, a command is answered (see handle). It reports false when c is finished.
func (rm *room) relay(c *conn, buf []byte) bool {
	tr := rm.tr
	defer rm.traceQueued()
	n, err := unix.Read(c.fd, buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		tr.Again(c.fd, "read") // nothing after all: epoll will say when there is
		c.drained = true
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
	c.drained = n < len(buf) // a short read took all there was: see echo
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

// say queues one line for c. It never writes: the loop does, when epoll says c is writable.
func (rm *room) say(c *conn, line string) {
	// Bytes already sent are dropped first, so the queue holds only what is pending; only if there are
	// some: copying the whole queue onto itself for every line made each line cost as much as the queue.
	if c.sent > 0 {
		c.out = append(c.out[:0], c.out[c.sent:]...)
		c.sent = 0
	}
	c.out = append(append(c.out, line...), '\n')
	c.told += len(line) + 1
	rm.p.touch(c) // the loop asks epoll to watch c for writing
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
			rm.tr.Close(c.fd, "too slow")
			rm.p.forget(c)
			rm.traceQueued()
		}
	}
}

// flush writes c's queue from the cursor on, until the queue is empty or the socket is full: epoll
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
			tr.Again(c.fd, "write") // the socket's buffer is full: wait in epoll_wait until it has room
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
