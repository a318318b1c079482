//go:build linux

// Step 07: one loop keeps every clock. Parent: step 05. The handlers and the interest list stay; the
// loop learns to act when nothing happens.
//
// Step 05 waits with no timeout: a client that connects and says nothing, or sends a byte a minute
// and never ends its line, holds its socket and its buffers forever. This loop gives each client two
// deadlines, idle (-idle: no line for that long) and line (-linetimeout: a line begun that long ago
// has not ended), and the shutdown grace becomes one more. They all live in one min-heap (timers.go);
// the earliest is the wait's timeout, and after every wait, whether it returned events or not, the
// loop handles every deadline that has passed: under steady traffic the wait always returns events,
// so a loop that looked at the clock only when a wait timed out would never get to it.
package main

import (
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"time"

	_ "embed"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
)

// shutdownGrace bounds how long a stopping server keeps sending what clients still have queued.
const shutdownGrace = 2 * time.Second

//go:embed scenarios/timers.txt
var timersScenario string

//go:embed scenarios/echo-seed.txt
var echoScenario string

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	trace := flag.Bool("trace", true, "write the trace to stdout")
	fds := flag.Bool("fds", false, "show fd numbers in the trace (they change from run to run)")
	echoing := flag.Bool("echo", false, "serve step03's echo instead of step04's chat room")
	sndbuf := flag.Int("sndbuf", 0, "if set, SO_SNDBUF for each client socket: small values show a slow reader sooner")
	maxLine := flag.Int("maxline", 1024, "chat: longest line a member may send, in bytes; longer ones are refused")
	maxQueue := flag.Int("maxqueue", 64<<10, "chat: a member whose socket is full with this many bytes still queued is too slow, and is put out")
	high := flag.Int("highwater", 64<<10, "echo: stop reading from a client while this many bytes wait to be sent back to it")
	low := flag.Int("lowwater", 16<<10, "echo: read from a paused client again once fewer than this many bytes wait")
	idle := flag.Duration("idle", 5*time.Minute, "a client that sends no complete line for this long is told and closed")
	lineTimeout := flag.Duration("linetimeout", 30*time.Second, "chat: a client whose line has been arriving this long without its newline is told and closed")
	demo := flag.Bool("demo", false, "play three members, two of whom run out of time (with -echo: the seed's steps), against this program and show the trace")
	flag.Parse()
	if *demo {
		name, text := "scenarios/timers.txt", timersScenario
		if *echoing {
			name, text = "scenarios/echo-seed.txt", echoScenario
		}
		os.Exit(replay.Demo(os.Stdout, "step07-timers", name, text, "-fds="+fmt.Sprint(*fds), "-echo="+fmt.Sprint(*echoing)))
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "step07-timers: unexpected argument %q: flags are written -name=value (see -h)\n", flag.Arg(0))
		os.Exit(2)
	}
	if *maxLine < 1 || *maxQueue < 1 || *sndbuf < 0 {
		fmt.Fprintf(os.Stderr, "step07-timers: want -maxline (%d) and -maxqueue (%d) of at least 1, and -sndbuf (%d) >= 0\n", *maxLine, *maxQueue, *sndbuf)
		os.Exit(2)
	}
	if *idle <= 0 || *lineTimeout <= 0 {
		fmt.Fprintf(os.Stderr, "step07-timers: want -idle (%v) and -linetimeout (%v) above 0\n", *idle, *lineTimeout)
		os.Exit(2)
	}
	if *low < 1 || *low > *high {
		fmt.Fprintf(os.Stderr, "step07-timers: want 1 <= -lowwater (%d) <= -highwater (%d)\n", *low, *high)
		os.Exit(2)
	}

	var tr *tracing.Recorder // nil: tracing off
	if *trace {
		tr = tracing.New(os.Stdout, *fds)
	}
	ln, bound, err := listen(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step07-timers: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step07-timers: listening on %s (try: go run ./step04-chat/client -addr %s)\n", bound, bound)
	tr.Listen(ln)
	sig, err := signalPipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "step07-timers: %v\n", err)
		os.Exit(1)
	}
	tr.Name(sig, "signals")
	var svc service = &room{maxLine: *maxLine, maxQueue: *maxQueue, tr: tr}
	if *echoing {
		svc, refusal = &echo{high: *high, low: *low, tr: tr}, "server busy: out of file descriptors, try again later\n"
	}
	if err := serve(ln, sig, *sndbuf, *idle, *lineTimeout, svc, tr); err != nil {
		fmt.Fprintf(os.Stderr, "step07-timers: %v\n", err)
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
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()})
	if ap.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
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

// service is what the loop serves: the room (room.go) or, with -echo, the echo (echo.go). Its
// handlers say in each client's want fields what they want next; only the loop talks to epoll.
type service interface {
	join(c *conn)                // a client was accepted
	read(c *conn, buf []byte)    // c is readable
	write(c *conn)               // c is writable, or its queue has just filled
	endTurn()                    // after each turn
	stop()                       // a signal came: the server is stopping
	takeWoken() []*conn          // clients whose wants changed outside their own turn (a broadcast)
	timeout(c *conn, why string) // one of c's deadlines passed: "idle" or "line"
}

// serve is the event loop: register the listener and the signal pipe once, then ask epoll which
// sockets are ready, waiting no longer than the earliest deadline, hand what is ready to the service's
// handlers and then every deadline that has passed, and keep the interest list and the deadlines in
// step with each client. It returns when a signal has stopped it and every client is closed.
func serve(ln, sig, sndbuf int, idle, lineTimeout time.Duration, svc service, tr *tracing.Recorder) error {
	p, err := newPoller(tr)
	if err != nil {
		return err
	}
	p.idleFor, p.lineFor, p.now = idle, lineTimeout, time.Now()
	for _, fd := range []int{ln, sig} {
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
	grace := deadline{why: "shutdown"} // when stopping: the moment to give up on sending what is queued
	graceOver := false
	events := make([]unix.EpollEvent, 128) // room for this many ready sockets per wait; more wait their turn
	for {
		if p.stopping && (graceOver || len(p.byFD()) == 0) {
			for _, c := range p.byFD() {
				end(c, "shutdown", tr)
				p.forget(c)
			}
			unix.Close(sig)
			unix.Close(spare)
			return nil
		}
		n, err := epollWait(p.ep, events, untilEarliest(p, tr))
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		p.now = time.Now()
		tr.EpollReady(events[:n])

		// Only what is ready comes back: no list to rebuild, no scan over every client.
		for _, ev := range events[:n] {
			switch fd := int(ev.Fd); {
			case fd == ln && !p.stopping:
				if c, _ := accept(ln, &spare, sndbuf, tr); c != nil && p.watch(c) {
					svc.join(c)
				}
			case fd == sig && !p.stopping:
				var b [1]byte
				unix.Read(sig, b[:])
				tr.Note("signal", "%s: stop accepting, send what is queued (at most %v), then exit", unix.SignalName(unix.Signal(b[0])), shutdownGrace)
				p.remove(ln)
				unix.Close(ln)
				tr.Close(ln, "shutdown")
				p.remove(sig)
				p.set(&grace, p.now.Add(shutdownGrace))
				p.stopping = true
				svc.stop()
				for _, c := range p.byFD() {
					if !c.wantWrite && !c.wantClose {
						linger(c, tr) // everything is sent: close gently (signals.go)
					}
					p.follow(c) // none is heard any more
				}
			case fd < len(p.clients) && p.clients[fd].c != nil:
				c := p.clients[fd].c
				switch {
				case c.lingering && ev.Events&readEvents != 0:
					discard(c, buf, tr)
				case c.wantRead && !p.stopping && ev.Events&readEvents != 0:
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

		if expireDue(p, svc, tr) { // after every wait, with events or without
			graceOver = true
		}
		svc.endTurn()
		for _, c := range svc.takeWoken() {
			p.follow(c)
		}
	}
}

// untilEarliest returns the time of the earliest deadline, which becomes the wait's timeout (zero if
// there is none: wait for as long as it takes), and writes the wait's trace line. The line names whose
// deadline it is, not how long it is: the trace stays the same from run to run.
func untilEarliest(p *poller, tr *tracing.Recorder) time.Time {
	d := p.next()
	if d == nil {
		tr.EpollWait()
		return time.Time{}
	}
	tr.EpollWaitUntil(d.fd(), d.why)
	return d.when
}

// expireDue hands every deadline that has passed by p.now to the service, the earliest first, and
// reports whether the shutdown grace was among them. The loop calls it after every wait, not only
// after one that timed out: under steady traffic some socket is always ready first, and a loop that
// looked at the clock only when a wait returned nothing would never see a deadline pass.
func expireDue(p *poller, svc service, tr *tracing.Recorder) (graceOver bool) {
	for d := p.expire(p.now); d != nil; d = p.expire(p.now) {
		if d.c == nil {
			tr.Note("timeout", "shutdown grace over: closing the clients still open")
			graceOver = true
			continue
		}
		tr.Event("timeout", d.c.fd, "%s", d.why)
		svc.timeout(d.c, d.why)
		p.follow(d.c)
	}
	return graceOver
}

// openRuntimePoller makes the Go runtime open its own epoll fd now. The runtime opens it lazily, the
// first time it needs a timer, and if that moment came while this server's fds were all in use (see
// accept.go), the runtime could not open it and would die ("netpollinit failed"). A nanosecond's sleep
// needs a timer.
func openRuntimePoller() { time.Sleep(time.Nanosecond) }

// epollWait waits until something in the interest list is ready, with no timeout, or until deadline
// if it is set (the earliest in the heap), and returns how many events it wrote. A signal (the Go runtime sends
// them to preempt goroutines) ends the wait with EINTR and n = -1: then it asks again, with what is
// left of the time. Unlike select's sets, nothing it was given was overwritten.
func epollWait(ep int, events []unix.EpollEvent, deadline time.Time) (int, error) {
	for {
		timeout := -1 // milliseconds; -1: none
		if !deadline.IsZero() {
			// Milliseconds, rounded up, as a C int: a deadline weeks away (-idle 1000h) waits as long
			// as epoll_wait can, and the loop, finding nothing due, waits again.
			timeout = int(min((max(time.Until(deadline), 0)+time.Millisecond-1)/time.Millisecond, math.MaxInt32))
		}
		n, err := unix.EpollWait(ep, events, timeout)
		if err != unix.EINTR {
			return n, err
		}
	}
}
