//go:build linux

// Step 05: one thread serves every client, with epoll.
//
// The handlers stay; only the loop changes. select (steps 02 to 04) is handed every watched fd on every
// call, in bitmaps of 1024 bits, and the kernel scans them all, however few are ready. epoll keeps the
// watched fds in the kernel: the loop registers a socket once (epoll_ctl ADD), changes what it asks
// only when that changes (MOD: EPOLLOUT while the client's queue holds bytes, as step03's write list),
// and each epoll_wait returns just the ready ones. A wait costs what is ready, not what is connected,
// and there is no FD_SETSIZE: this server takes clients past fd 1023 (B19 is gone, not worked around).
//
// It serves the chat room of step04 or, with -echo, the echo of step03: same handlers, new loop.
// Level-triggered by default (epoll reports a socket on every wait while it is ready, like select);
// with -et, edge-triggered (once per change), and then every read, accept and write goes on until
// EAGAIN. When the process runs out of fds (EMFILE), a spare fd lets it refuse the client clearly
// instead of spinning on a listener that stays ready.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	_ "embed"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
)

//go:embed scenarios/echo-seed.txt
var echoScenario string

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	trace := flag.Bool("trace", true, "write the trace to stdout")
	fds := flag.Bool("fds", false, "show fd numbers in the trace (they change from run to run)")
	echoing := flag.Bool("echo", false, "serve step03's echo instead of step04's chat room")
	et := flag.Bool("et", false, "edge-triggered: epoll reports a socket once per change, and the loop reads, accepts and writes until EAGAIN")
	sndbuf := flag.Int("sndbuf", 0, "if set, SO_SNDBUF for each client socket: small values show a slow reader sooner")
	high := flag.Int("highwater", 64<<10, "stop reading from a client while this many bytes wait to be sent to it")
	low := flag.Int("lowwater", 16<<10, "read from a paused client again once fewer than this many bytes wait")
	demo := flag.Bool("demo", false, "play the seed's steps against this program (with -echo, -et as given) and show the trace")
	flag.Parse()
	if *demo {
		os.Exit(replay.Demo(os.Stdout, "step05-epoll", "scenarios/echo-seed.txt", echoScenario,
			"-fds="+fmt.Sprint(*fds), "-echo="+fmt.Sprint(*echoing), "-et="+fmt.Sprint(*et)))
	}
	if *low < 1 || *low > *high {
		fmt.Fprintf(os.Stderr, "step05-epoll: want 1 <= -lowwater (%d) <= -highwater (%d)\n", *low, *high)
		os.Exit(2)
	}

	var tr *tracing.Recorder // nil: tracing off
	if *trace {
		tr = tracing.New(os.Stdout, *fds)
	}
	buf := make([]byte, 64<<10) // one buffer for every read: what must outlive the read is queued
	svc := service{
		read:  func(c *conn) bool { return echo(c, buf, *high, tr) },
		write: func(c *conn) bool { return flush(c, *low, tr) },
	}
	ln, bound, err := listen(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step05-epoll: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step05-epoll: listening on %s (try: nc %s %d)\n", bound, bound.Addr(), bound.Port())
	tr.Listen(ln)
	if err := serve(ln, svc, *et, *sndbuf, tr); err != nil {
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

// conn is one client: its socket, and the bytes it sent that have not yet gone back to it.
type conn struct {
	fd     int
	out    []byte // the queue: bytes read from the client, in order; out[sent:] still has to be written
	sent   int    // the cursor: how much of out is written already
	paused bool   // the queue passed the high-water mark: not reading from this client for now
	eof    bool   // the client sent FIN: nothing more to read, close once the queue is empty

	events  uint32 // what epoll is asked about this client now
	drained bool   // the last read returned EAGAIN: only epoll can tell when there is more
}

// pending is how many queued bytes still have to be written.
func (c *conn) pending() int { return len(c.out) - c.sent }

// reading reports whether the service reads from c now.
func (c *conn) reading() bool { return !c.paused && !c.eof }

// A service is what the loop serves. The loop knows nothing of what clients say: it calls read when
// epoll reports c readable and write when c's queue may be written; each reports false when c is done.
type service struct {
	read, write func(c *conn) bool
}

// Events that send the loop to a handler. A reset or an error (ERR, HUP: epoll reports them unasked)
// goes to both, as select reported such a socket readable and writable: the call then fails and says why.
const (
	readEvents  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLERR | unix.EPOLLHUP
	writeEvents = unix.EPOLLOUT | unix.EPOLLERR | unix.EPOLLHUP
)

// serve is the event loop: register the listener once, then ask epoll which sockets are ready, handle
// exactly those, and keep epoll's interest list in step with what each client waits for.
func serve(ln int, svc service, et bool, sndbuf int, tr *tracing.Recorder) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	var mode uint32 // level-triggered: a socket is reported on every wait while it is ready
	if et {
		mode = unix.EPOLLET // edge-triggered: once each time it becomes ready
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, ln, &unix.EpollEvent{Events: unix.EPOLLIN | mode, Fd: int32(ln)}); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	tr.EpollCtl(unix.EPOLL_CTL_ADD, ln, unix.EPOLLIN|mode)
	// One fd kept spare for the moment the others run out (see refuse). The Go runtime opens an epoll
	// fd of its own the first time it needs a timer; if that moment came while the fds were out, the
	// runtime would die ("netpollinit failed"). A nanosecond's sleep makes it come now.
	time.Sleep(time.Nanosecond)
	spare, err := openSpare()
	if err != nil {
		return fmt.Errorf("spare fd: %w", err)
	}

	clients := map[int]*conn{}             // by fd: epoll says which fd is ready, this says whose it is
	events := make([]unix.EpollEvent, 128) // room for this many ready sockets per wait; more wait their turn
	for {
		tr.EpollWait(len(clients) + 1)
		n, err := epollWait(ep, events)
		if err != nil {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		tr.EpollReady(events[:n])

		// Only what is ready comes back: no scan over every client, no list rebuilt.
		for _, ev := range events[:n] {
			if int(ev.Fd) == ln {
				for {
					c, more := accept(ln, &spare, sndbuf, tr)
					if c != nil && watch(ep, c, mode, tr) {
						clients[c.fd] = c
					}
					if !more || !et {
						break // level-triggered: epoll reports the listener again while clients wait
					}
				}
				continue
			}
			c := clients[int(ev.Fd)]
			open := true
			if c.reading() && ev.Events&readEvents != 0 {
				for c.drained = false; open && c.reading() && !c.drained; {
					open = svc.read(c)
					if !et {
						break // level-triggered: epoll reports c again if more is waiting
					}
				}
			}
			if open && c.pending() > 0 && ev.Events&writeEvents != 0 {
				open = svc.write(c) // writes until the queue is empty or EAGAIN, in either mode
			}
			if !open {
				forget(ep, c)
				delete(clients, c.fd)
				continue
			}
			if err := follow(ep, c, mode, tr); err != nil {
				return err
			}
		}
	}
}

// epollWait waits, with no timeout, until something in the interest list is ready, and returns how
// many events it wrote. A signal (the Go runtime sends them to preempt goroutines) ends the wait with
// EINTR and n = -1: then it asks again. Unlike select's sets, nothing it was given was overwritten.
func epollWait(ep int, events []unix.EpollEvent) (int, error) {
	for {
		n, err := unix.EpollWait(ep, events, -1)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// interest is what epoll is asked about c, as step03 rebuilt its lists every turn: readable while the
// service reads from c (RDHUP: and tell when the client has sent FIN), writable while its queue is not
// empty. Asking for EPOLLOUT with an empty queue would wake the loop for nothing, on every wait.
func interest(c *conn, mode uint32) uint32 {
	var events uint32
	if c.reading() {
		events |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if c.pending() > 0 {
		events |= unix.EPOLLOUT
	}
	return events | mode
}

// watch adds a new client to the interest list. If the kernel cannot take one more (ENOMEM, or ENOSPC
// past fs.epoll.max_user_watches), the client is closed, and the others are served as before.
func watch(ep int, c *conn, mode uint32, tr *tracing.Recorder) bool {
	c.events = interest(c, mode)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: c.events, Fd: int32(c.fd)}); err != nil {
		tr.Error(c.fd, "epoll_ctl", err)
		unix.Close(c.fd)
		tr.Close(c.fd, "error")
		return false
	}
	tr.EpollCtl(unix.EPOLL_CTL_ADD, c.fd, c.events)
	return true
}

// follow keeps the interest list in step with c: one epoll_ctl MOD when what c waits for has changed,
// none otherwise. In edge-triggered mode a MOD also re-arms: if c is ready already, the next wait says so.
func follow(ep int, c *conn, mode uint32, tr *tracing.Recorder) error {
	want := interest(c, mode)
	if want == c.events {
		return nil
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: want, Fd: int32(c.fd)}); err != nil {
		return fmt.Errorf("epoll_ctl MOD: %w", err)
	}
	c.events = want
	tr.EpollCtl(unix.EPOLL_CTL_MOD, c.fd, want)
	return nil
}

// forget takes c out of the interest list, then closes it (the handler's close line stands for both).
// DEL comes first: epoll watches the open socket, not the fd number, and a copy of the socket left
// open elsewhere (a dup, a child's) would keep its events coming for a number that is no longer c's.
func forget(ep int, c *conn) {
	unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, c.fd, nil)
	unix.Close(c.fd) // B2: a finished client gives its fd back
}

// accept takes one client from the listener. Its socket is nonblocking: see flush. more is false when
// there was nobody to take (EAGAIN): edge-triggered, the loop accepts until then.
func accept(ln int, spare *int, sndbuf int, tr *tracing.Recorder) (c *conn, more bool) {
	fd, _, err := unix.Accept(ln)
	switch {
	case errors.Is(err, unix.EAGAIN):
		tr.Again(ln, "accept") // nobody is waiting (or the client left before we got to it)
		return nil, false
	case errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE):
		tr.Error(ln, "accept", err)
		return nil, refuse(ln, spare, tr)
	case errors.Is(err, unix.ECONNABORTED):
		tr.Error(ln, "accept", err) // that client left while it waited: take the next
		return nil, true
	case err != nil:
		tr.Error(ln, "accept", err)
		return nil, false
	}
	unix.CloseOnExec(fd)
	unix.SetNonblock(fd, true) // a write takes what fits and returns, instead of stalling the loop (B3)
	tr.Accept(fd)
	if sndbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	return &conn{fd: fd}, true
}

// refuse is what accept does when the process is out of fds (EMFILE; ENFILE: the whole system is).
// The client stays in the backlog, so the listener stays ready: level-triggered, epoll would report it
// on every wait, a busy loop that accepts nobody; edge-triggered, the waiting clients would hang. So
// the loop kept one fd spare for this moment: give it back, accept the client with it, tell the
// client and close it, then take the spare again. It reports whether there was a client to refuse.
func refuse(ln int, spare *int, tr *tracing.Recorder) bool {
	unix.Close(*spare)
	fd, _, err := unix.Accept(ln)
	switch {
	case err == nil:
		tr.Accept(fd)
		unix.Write(fd, []byte("server full: out of file descriptors, try again later\n"))
		unix.Close(fd)
		tr.Close(fd, "refused: out of fds")
	case errors.Is(err, unix.EAGAIN):
		tr.Again(ln, "accept") // the backlog was empty after all
	default:
		tr.Error(ln, "accept", err)
	}
	var spareErr error
	if *spare, spareErr = openSpare(); spareErr != nil {
		tr.Note("spare", "cannot reopen the spare fd: %v", spareErr) // the next EMFILE will find none
	}
	return err == nil
}

// openSpare opens the fd that refuse gives back: /dev/null, which costs nothing else.
func openSpare() (int, error) {
	return unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
}
