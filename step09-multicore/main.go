//go:build linux

// Step 09: one event loop per core. Parent: step 05. The handlers stay; step 05's loop runs per core.
//
// One loop uses one core. nginx, Redis's I/O threads, Seastar and gnet scale the same way: -loops N
// loops (one per CPU by default), each on a locked OS thread with its own epoll instance and its own
// clients. Loop 0 accepts and deals clients round-robin, or, with -reuseport, every loop has its own
// listener on the port and the kernel deals them by a hash of the addresses.
//
// The chat room spans the loops: each keeps its part of the room (room.go) and an inbox (inbox.go); a
// line said on loop 0 is queued for its members and posted once to every other loop, which says it to
// its own. The registry of names (registry.go) is the only other shared thing.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
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
	loops := flag.Int("loops", runtime.NumCPU(), "run this many event loops, each on a thread of its own (default: the CPUs this process may run on)")
	reuseport := flag.Bool("reuseport", false, "give every loop a listener of its own (SO_REUSEPORT), and let the kernel deal the connections; by default loop 0 accepts and deals them round-robin")
	trace := flag.Bool("trace", true, "write the trace to stdout")
	fds := flag.Bool("fds", false, "show fd numbers in the trace (they change from run to run)")
	echoing := flag.Bool("echo", false, "serve step03's echo instead of step04's chat room")
	sndbuf := flag.Int("sndbuf", 0, "if set, SO_SNDBUF for each client socket: small values show a slow reader sooner")
	maxLine := flag.Int("maxline", 1024, "chat: longest line a member may send, in bytes; longer ones are refused")
	maxQueue := flag.Int("maxqueue", 64<<10, "chat: a member whose socket is full with this many bytes still queued is too slow, and is put out")
	high := flag.Int("highwater", 64<<10, "echo: stop reading from a client while this many bytes wait to be sent back to it")
	low := flag.Int("lowwater", 16<<10, "echo: read from a paused client again once fewer than this many bytes wait")
	demo := flag.Bool("demo", false, "play three members chatting (with -echo: the seed's steps) against this program and show the trace")
	flag.Parse()
	if *demo {
		name, text := "scenarios/room.txt", roomScenario
		if *echoing {
			name, text = "scenarios/echo-seed.txt", echoScenario
		}
		os.Exit(replay.Demo(os.Stdout, "step09-multicore", name, text, "-fds="+fmt.Sprint(*fds), "-echo="+fmt.Sprint(*echoing), "-loops=2"))
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "step09-multicore: unexpected argument %q: flags are written -name=value (see -h)\n", flag.Arg(0))
		os.Exit(2)
	}
	if *maxLine < 1 || *maxQueue < 1 || *sndbuf < 0 {
		fmt.Fprintf(os.Stderr, "step09-multicore: want -maxline (%d) and -maxqueue (%d) of at least 1, and -sndbuf (%d) >= 0\n", *maxLine, *maxQueue, *sndbuf)
		os.Exit(2)
	}
	if *loops < 1 || *loops > 1024 {
		fmt.Fprintf(os.Stderr, "step09-multicore: want 1 <= -loops (%d) <= 1024\n", *loops)
		os.Exit(2)
	}
	if *low < 1 || *low > *high {
		fmt.Fprintf(os.Stderr, "step09-multicore: want 1 <= -lowwater (%d) <= -highwater (%d)\n", *low, *high)
		os.Exit(2)
	}

	trs := make([]*tracing.Recorder, *loops) // nil: tracing off
	if *trace {
		trs = tracing.Loops(os.Stdout, *fds, *loops) // one per loop: each line starts L0, L1, ...
	}
	inboxes := make([]*inbox, *loops)
	for i := range inboxes {
		var err error
		if inboxes[i], err = newInbox(); err != nil {
			fmt.Fprintf(os.Stderr, "step09-multicore: eventfd: %v\n", err)
			os.Exit(1)
		}
	}
	names := &registry{}
	all := make([]*loop, *loops)
	for i := range all {
		tr := trs[i]
		l := &loop{id: i, ln: -1, inbox: inboxes[i], deal: !*reuseport, tr: tr,
			mail: &mail{from: i, inboxes: inboxes, out: make([][]message, *loops)}}
		if i == 0 || *reuseport {
			var bound netip.AddrPort
			var err error
			if l.ln, bound, err = listen(*addr, *reuseport); err != nil {
				fmt.Fprintf(os.Stderr, "step09-multicore: %v\n", err)
				os.Exit(1)
			}
			if i == 0 {
				*addr = bound.String() // with port 0, the others listen on the port the kernel picked
				fmt.Fprintf(os.Stderr, "step09-multicore: listening on %s with %d loops (try: go run ./step04-chat/client -addr %s)\n", bound, *loops, bound)
			}
			tr.Listen(l.ln)
		}
		var err error
		if l.sig, err = signalPipe(); err != nil { // every loop hears the signal on a pipe of its own
			fmt.Fprintf(os.Stderr, "step09-multicore: %v\n", err)
			os.Exit(1)
		}
		tr.Name(l.sig, "signals")
		tr.Name(l.inbox.efd, "inbox")
		l.svc = &room{maxLine: *maxLine, maxQueue: *maxQueue, tr: tr, part: &part{loop: i, mail: l.mail, names: names}}
		if *echoing {
			l.svc, refusal = &echo{high: *high, low: *low, tr: tr}, "server busy: out of file descriptors, try again later\n"
		}
		all[i] = l
	}
	var running sync.WaitGroup
	for _, l := range all {
		running.Go(func() {
			if err := l.serve(*sndbuf); err != nil {
				fmt.Fprintf(os.Stderr, "step09-multicore: loop %d: %v\n", l.id, err)
				os.Exit(1)
			}
		})
	}
	running.Wait()
}

// listen opens a TCP socket, binds it to addr and listens. The listener is nonblocking, so that an
// accept for a client that already left returns EAGAIN instead of blocking the loop. With reuseport,
// other sockets may listen on the same address: each gets its own backlog, and the kernel puts each
// new connection in one of them, chosen by a hash of the two addresses and ports.
func listen(addr string, reuseport bool) (fd int, bound netip.AddrPort, err error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, bound, fmt.Errorf("-addr %q: want IP:port, e.g. 127.0.0.1:8000", addr)
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()})
	if ap.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	if fd, err = unix.Socket(family, unix.SOCK_STREAM, 0); err != nil {
		return -1, bound, fmt.Errorf("socket: %w", err)
	}
	unix.CloseOnExec(fd)
	// SO_REUSEADDR lets a restarted server bind while old connections sit in TIME_WAIT.
	err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if reuseport && err == nil {
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	if err == nil {
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

// service is what the loop serves: the room (room.go) or, with -echo, the echo (echo.go). Its
// handlers say in each client's want fields what they want next; only the loop talks to epoll.
type service interface {
	join(c *conn)             // a client was accepted
	read(c *conn, buf []byte) // c is readable
	write(c *conn)            // c is writable, or its queue has just filled
	endTurn()                 // after each turn
	stop()                    // a signal came: the server is stopping
	takeWoken() []*conn       // clients whose wants changed outside their own turn (a broadcast)
	deliver(m message)        // a line another loop sent (span.go)
}

// loop is one event loop. Everything in it is its own, but for its inbox, which other loops post to.
type loop struct {
	id    int
	ln    int  // its listener (loop 0's, or with -reuseport every loop's), or -1
	deal  bool // it deals the clients it accepts to all the loops, in turn
	dealt int  // how many it has dealt
	sig   int  // its signal pipe: every loop hears SIGTERM
	inbox *inbox
	mail  *mail // what it has for the other loops this turn
	svc   service
	tr    *tracing.Recorder
}

// serve is one event loop, step 05's: register the listener (if the loop has one), the signal pipe and
// the inbox once, then ask epoll which are ready, hand exactly those to the service's handlers, and
// keep the interest list in step with what each client wants. It returns when a signal has stopped
// it and every client it owns is closed.
func (l *loop) serve(sndbuf int) error {
	// The Go runtime runs goroutines on whichever threads it likes; this one keeps its own, so that each
	// loop is one thread the kernel can run on a core of its own, as in C.
	runtime.LockOSThread()
	ln, sig, svc, tr := l.ln, l.sig, l.svc, l.tr
	p, err := newPoller(tr)
	if err != nil {
		return err
	}
	for _, fd := range []int{ln, sig, l.inbox.efd} {
		if fd < 0 {
			continue // no listener: loop 0 deals this loop its clients
		}
		if err := p.add(fd, unix.EPOLLIN); err != nil {
			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	buf := make([]byte, 64<<10) // one buffer for every read: what must outlive the read is queued
	openRuntimePoller()
	spare, err := openSpare()
	if err != nil {
		return fmt.Errorf("open the spare fd: %w", err)
	}
	var taken []message                    // what the last look at the inbox found, emptied for the next
	var stopBy time.Time                   // when stopping: the moment to give up on sending what is queued
	events := make([]unix.EpollEvent, 128) // room for this many ready sockets per wait; more wait their turn
	for {
		if p.stopping && (time.Now().After(stopBy) || len(p.byFD()) == 0) {
			for _, c := range p.byFD() {
				end(c, "shutdown", tr)
				p.forget(c)
			}
			unix.Close(sig)
			unix.Close(spare)
			l.inbox.close()
			return nil
		}
		tr.EpollWait()
		n, err := epollWait(p.ep, events, stopBy)
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		tr.EpollReady(events[:n])
		if !p.stopping && stopping.Load() != 0 {
			stopBy = l.stop(p) // another loop heard the signal first: read nothing more from now on
		}

		// Only what is ready comes back: no list to rebuild, no scan over every client.
		for _, ev := range events[:n] {
			switch fd := int(ev.Fd); {
			case fd == ln && !p.stopping:
				if c, _ := accept(ln, &spare, sndbuf, tr); c != nil {
					if to := l.dealTo(); to != l.id {
						l.mail.send(to, message{c: c, name: tr.Pass(c.fd, fmt.Sprint("L", to))}) // posted at the end of the turn
					} else if p.watch(c) {
						svc.join(c)
					}
				}
			case fd == l.inbox.efd:
				var wasFull, room bool
				taken, wasFull = l.inbox.take(taken)
				if wasFull {
					l.mail.sendOthers(message{room: true}) // whoever stopped reading for it may read again
				}
				for _, m := range taken {
					if m.room {
						room = true
					} else if m.c == nil && !p.stopping {
						svc.deliver(m) // a line from another loop
					} else if m.c != nil {
						tr.Adopt(m.c.fd, m.name, fmt.Sprint("L", m.from)) // a client dealt to this loop
						if p.stopping {
							end(m.c, "shutdown", tr)
							unix.Close(m.c.fd)
						} else if p.watch(m.c) {
							svc.join(m.c)
						}
					}
				}
				clear(taken) // no pointers kept alive by a slice that is reused
				if room && p.deaf && !l.mail.anyFull() {
					l.hear(p, false)
				}
			case fd == sig && !p.stopping:
				var b [1]byte
				unix.Read(sig, b[:])
				stopping.CompareAndSwap(0, int32(b[0]))
				stopBy = l.stop(p)
			case fd < len(p.clients) && p.clients[fd].c != nil:
				c := p.clients[fd].c
				switch {
				case c.lingering && ev.Events&readEvents != 0:
					discard(c, buf, tr)
				case c.wantRead && !p.stopping && !p.deaf && ev.Events&readEvents != 0:
					svc.read(c, buf)
				}
				// Write when epoll says c is writable, and also when c's queue has just filled and epoll
				// is not watching it for writing yet: a socket with space takes the bytes now, which
				// saves two epoll_ctl calls and a turn; if it has none, the write says EAGAIN and c is
				// watched for EPOLLOUT.
				if c.wantWrite && (ev.Events&writeEvents != 0 || p.clients[fd].events&unix.EPOLLOUT == 0) {
					svc.write(c)
				}
				if p.stopping && !c.wantWrite && !c.wantClose && !c.lingering {
					linger(c, tr) // stopping, and everything is sent: close gently (signals.go)
				}
				p.follow(c)
			}
			for _, c := range svc.takeWoken() {
				p.follow(c)
			}
		}
		svc.endTurn()
		for _, c := range svc.takeWoken() {
			p.follow(c)
		}
		if l.mail.flush(tr) && !p.deaf { // what this turn has for the other loops: one post to each
			l.hear(p, true)
		}
	}
}

// openRuntimePoller makes the Go runtime open its own epoll fd now. The runtime opens it lazily, the
// first time it needs a timer, and if that moment came while this server's fds were all in use (see
// accept.go), the runtime could not open it and would die ("netpollinit failed"). A nanosecond's sleep
// needs a timer.
func openRuntimePoller() { time.Sleep(time.Nanosecond) }

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
