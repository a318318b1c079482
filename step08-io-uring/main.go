//go:build linux

// Step 08: one thread serves every client, with io_uring. Parent: step 05. The handlers stay; only the
// loop changes, and it changes its question.
//
// select and epoll answer "which sockets can I use now?", and the loop then makes the calls itself.
// io_uring answers "which of the operations I asked for have finished?": the loop puts requests
// (accept, recv, send, close) in a submission queue shared with the kernel, the kernel carries them
// out when it can, and puts each result in a completion queue. One io_uring_enter submits a batch and
// waits; the results are read from memory, with no call per socket (ring.go).
//
// It serves step 04's chat room (room.go) or, with -echo, step 03's echo (echo.go): the same handlers,
// the same want fields. A handler no longer calls read or write: it takes the result of the recv or
// send that has completed (completions.go), and says what it wants next, as before.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
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
	sndbuf := flag.Int("sndbuf", 0, "if set, SO_SNDBUF for each client socket: small values show a slow reader sooner")
	maxLine := flag.Int("maxline", 1024, "chat: longest line a member may send, in bytes; longer ones are refused")
	maxQueue := flag.Int("maxqueue", 64<<10, "chat: a member whose socket is full with this many bytes still queued is too slow, and is put out")
	high := flag.Int("highwater", 64<<10, "echo: stop reading from a client while this many bytes wait to be sent back to it")
	low := flag.Int("lowwater", 16<<10, "echo: read from a paused client again once fewer than this many bytes wait")
	multishot := flag.Bool("multishot", true, "accept with one multishot request (-multishot=false, or -nomultishot: one request per client)")
	flag.BoolFunc("nomultishot", "the same as -multishot=false", func(string) error { *multishot = false; return nil })
	demo := flag.Bool("demo", false, "play three members chatting (with -echo: the seed's steps) against this program and show the trace")
	flag.Parse()
	if *demo {
		name, text := "scenarios/room.txt", roomScenario
		if *echoing {
			name, text = "scenarios/echo-seed.txt", echoScenario
		}
		os.Exit(replay.Demo(os.Stdout, "step08-io-uring", name, text, "-fds="+fmt.Sprint(*fds), "-echo="+fmt.Sprint(*echoing)))
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "step08-io-uring: unexpected argument %q: flags are written -name=value (see -h)\n", flag.Arg(0))
		os.Exit(2)
	}
	if *maxLine < 1 || *maxQueue < 1 || *sndbuf < 0 {
		fmt.Fprintf(os.Stderr, "step08-io-uring: want -maxline (%d) and -maxqueue (%d) of at least 1, and -sndbuf (%d) >= 0\n", *maxLine, *maxQueue, *sndbuf)
		os.Exit(2)
	}
	if *low < 1 || *low > *high {
		fmt.Fprintf(os.Stderr, "step08-io-uring: want 1 <= -lowwater (%d) <= -highwater (%d)\n", *low, *high)
		os.Exit(2)
	}

	var tr *tracing.Recorder // nil: tracing off
	if *trace {
		tr = tracing.New(os.Stdout, *fds)
	}
	// The ring first: where io_uring is missing or refused, that is all the program says. The thread
	// that sets it up is the one that submits (IORING_SETUP_SINGLE_ISSUER), and Go moves goroutines
	// between threads unless told not to.
	runtime.LockOSThread()
	q, err := newRequests(tr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step08-io-uring: %v\n", err)
		if errors.Is(err, errUnavailable) {
			os.Exit(3) // the tests skip on this status, and only on it
		}
		os.Exit(1)
	}
	ln, bound, err := listen(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step08-io-uring: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step08-io-uring: listening on %s (try: go run ./step04-chat/client -addr %s)\n", bound, bound)
	tr.Listen(ln)
	sig, err := signalPipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "step08-io-uring: %v\n", err)
		os.Exit(1)
	}
	tr.Name(sig, "signals")
	var svc service = &room{maxLine: *maxLine, maxQueue: *maxQueue, tr: tr}
	if *echoing {
		svc, refusal = &echo{high: *high, low: *low, tr: tr}, "server busy: out of file descriptors, try again later\n"
	}
	if err := serve(q, ln, sig, *sndbuf, *multishot, svc, tr); err != nil {
		fmt.Fprintf(os.Stderr, "step08-io-uring: %v\n", err)
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
// handlers say in each client's want fields what they want next; only the loop talks to the ring.
type service interface {
	join(c *conn)             // a client was accepted
	read(c *conn, buf []byte) // a recv for c completed: its bytes are in buf
	write(c *conn)            // a send for c completed
	next(c *conn) []byte      // the bytes c is to receive next, from its cursor: what the loop sends
	endTurn()                 // after each turn
	stop()                    // a signal came: the server is stopping
	takeWoken() []*conn       // clients whose wants changed outside their own turn (a broadcast)
}

// serve is the event loop, on q's ring: submit an accept for the listener and a read of the signal
// pipe, then wait for completions, hand each to the handlers of the client it is for, and submit what
// each client wants next (requests.go). It returns when a signal has stopped it and every client is
// closed.
func serve(q *requests, ln, sig, sndbuf int, multishot bool, svc service, tr *tracing.Recorder) error {
	q.next = svc.next
	listening := op(0) // the listener's request in flight: opAccept, or opPoll while out of fds
	acceptNext := func() {
		q.check(q.r.accept(ln, multishot, userData(0, opAccept)))
		listening = opAccept
		q.inFlight++
		tr.Submit("accept", "listener", 0)
	}
	acceptNext()
	// A read of a nonblocking pipe completes at once with EAGAIN: the request is to wait for the byte.
	unix.SetNonblock(sig, false)
	q.check(q.r.read(sig, q.sigByte[:], userData(0, opSignal)))
	q.inFlight++
	tr.Submit("read", "signals", 0)
	openRuntimePoller()
	spare, err := openSpare()
	if err != nil {
		return fmt.Errorf("open the spare fd: %w", err)
	}
	var stopBy time.Time // when stopping: the moment to give up on sending what is queued
	for {
		if q.stopping && (time.Now().After(stopBy) || len(q.clients) == 0) {
			for _, c := range q.byID() {
				if !c.wantClose {
					end(c, "shutdown", tr)
				}
				if c.fd >= 0 {
					unix.Close(c.fd) // freeing the ring, below, ends the requests still in flight
				}
			}
			q.r.free()
			unix.Close(sig)
			unix.Close(spare)
			return nil
		}
		if q.err != nil {
			return q.err
		}
		tr.Enter(q.inFlight)
		if err := q.r.enter(1); err != nil {
			return err
		}
		// Only what has finished comes back, with its result: the bytes are read or sent already.
		q.r.reap(func(cqe io_uring_cqe) {
			id, kind := cqe.user_data>>8, op(cqe.user_data&0xff)
			more := cqe.flags&IORING_CQE_F_MORE != 0
			if !more && kind != opCancel && kind != opProvide {
				q.inFlight--
			}
			c := q.clients[id]
			switch {
			case kind == opAccept:
				tr.Complete("accept", "listener", cqe.res, more)
				if !more {
					listening = 0
				}
				if q.stopping {
					if cqe.res >= 0 {
						unix.Close(int(cqe.res)) // came in as the listener closed
					}
					return
				}
				fd, err := int(cqe.res), error(nil)
				if cqe.res < 0 {
					fd, err = -1, unix.Errno(-cqe.res)
				}
				if c, _ := accept(fd, err, ln, &spare, sndbuf, tr); c != nil {
					q.add(c)
					svc.join(c)
					q.follow(c)
				}
				switch {
				case listening != 0:
				case cqe.res == -int32(unix.EINVAL) && multishot:
					// A kernel before 5.19 has no multishot accept: one request per client, then.
					multishot = false
					tr.Note("accept", "no multishot accept in this kernel: one request per client")
					acceptNext()
				case cqe.res == -int32(unix.EMFILE) || cqe.res == -int32(unix.ENFILE):
					// Out of fds, an accept fails at once, before it looks for a client: submitted
					// again, it would fail again, forever. So the loop waits for the next client with
					// a poll of the listener, and accepts then (with the spare fd, if still out).
					q.check(q.r.poll(ln, userData(0, opPoll)))
					listening = opPoll
					q.inFlight++
					tr.Submit("poll", "listener", 0)
				default:
					acceptNext()
				}
			case kind == opPoll:
				tr.Complete("poll", "listener", cqe.res, false)
				if listening = 0; !q.stopping {
					acceptNext()
				}
			case kind == opSignal:
				tr.Complete("read", "signals", cqe.res, false)
				if q.stopping || cqe.res != 1 {
					return
				}
				tr.Note("signal", "%s: stop accepting, send what is queued (at most %v), then exit", unix.SignalName(unix.Signal(q.sigByte[0])), shutdownGrace)
				if listening != 0 {
					q.check(q.r.cancel(userData(0, listening), userData(0, opCancel)))
					tr.Submit("cancel", map[op]string{opAccept: "accept", opPoll: "poll"}[listening]+" listener", 0)
				}
				unix.Close(ln) // the accept holds the socket open until its cancel completes
				tr.Close(ln, "shutdown")
				stopBy = time.Now().Add(shutdownGrace)
				q.grace = unix.NsecToTimespec(int64(shutdownGrace))
				q.check(q.r.timeout(&q.grace, userData(0, opGrace)))
				q.inFlight++
				tr.Submit("timeout", shutdownGrace.String(), 0)
				q.stopping = true
				svc.stop()
				for _, c := range q.byID() {
					if !c.wantWrite && !c.wantClose {
						linger(c, tr) // everything is sent: close gently (signals.go)
					}
					q.follow(c) // none is heard any more
				}
			case kind == opGrace, kind == opCancel, kind == opProvide:
				// The grace is over (the loop's first test sees it), or a cancel or a return failed.
				tr.Complete(map[op]string{opGrace: "timeout", opCancel: "cancel", opProvide: "provide"}[kind], "", cqe.res, false)
			case c == nil:
				tr.Complete("unknown", fmt.Sprint(cqe.user_data), cqe.res, false) // a bug: shown, not hidden
			case kind == opRecv:
				c.recving = false
				buf := q.buffer(cqe)
				tr.Complete("recv", q.label(c), cqe.res, false)
				switch {
				case cqe.res == -int32(unix.ENOBUFS) && !c.closing:
					q.starve(c) // every buffer was in use: asked again at the end of the turn
				case c.closing: // nobody reads it any more
				case c.lingering:
					c.got, c.res = opRecv, cqe.res
					discard(c, buf, tr)
				case q.stopping || c.left:
					// Nothing more is read from it, as step05 would not read it: the bytes are dropped.
				default: // not paused: a client pauses in a read or a write, when it has no recv in flight
					c.got, c.res = opRecv, cqe.res
					svc.read(c, buf)
				}
				c.got = 0
				q.giveBack(cqe)
			case kind == opSend:
				c.sending = nil
				tr.Complete("send", q.label(c), cqe.res, false)
				if c.closing {
					break
				}
				c.got, c.res = opSend, cqe.res
				svc.write(c)
				c.got = 0
			case kind == opClose:
				tr.Complete("close", q.label(c), cqe.res, false)
				q.forget(c)
				return
			}
			if c != nil {
				if q.stopping && !c.wantWrite && !c.wantClose && !c.lingering {
					linger(c, tr) // stopping, and everything is sent: close gently (signals.go)
				}
				q.follow(c)
			}
			for _, c := range svc.takeWoken() {
				q.follow(c)
			}
		})
		svc.endTurn()
		for _, c := range svc.takeWoken() {
			q.follow(c)
		}
		q.giveAllBack()
		q.feedStarved()
	}
}

// openRuntimePoller makes the Go runtime open its own epoll fd now. The runtime opens it lazily, the
// first time it needs a timer, and if that moment came while this server's fds were all in use (see
// accept.go), the runtime could not open it and would die ("netpollinit failed"). A nanosecond's sleep
// needs a timer.
func openRuntimePoller() { time.Sleep(time.Nanosecond) }
