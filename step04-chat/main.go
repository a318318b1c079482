//go:build linux || darwin

// Step 04: a chat room. Step 03's loop, with its write queues, now serves a room instead of an echo.
// Parent: step 03.
//
// This is the second seed's chat server (SelectServer) done right. Step 03 echoed: what a client sent
// went back to that client only. Here a line one member sends is queued for every other member, so a
// read on one socket fills the queues of all the others, and the loop writes each queue out when its
// socket is writable, exactly as in step 03. What is new is what the bytes mean: the stream from each
// member is cut into lines (protocol.go), a line is something to say or a command (/nick, /who, /msg,
// /quit), and every member has a name. The loop is step 03's; the room (room.go) is its new service,
// with two more handlers the loop calls: join, for a new client, and endTurn, after each turn.
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
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
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
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "step04-chat: unexpected argument %q: flags are written -name=value (see -h)\n", flag.Arg(0))
		os.Exit(2)
	}
	if *maxLine < 1 || *maxQueue < 1 || *sndbuf < 0 {
		fmt.Fprintf(os.Stderr, "step04-chat: want -maxline (%d) and -maxqueue (%d) of at least 1, and -sndbuf (%d) >= 0\n", *maxLine, *maxQueue, *sndbuf)
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
	if err := serve(ln, sig, *sndbuf, &room{maxLine: *maxLine, maxQueue: *maxQueue, tr: tr}); err != nil {
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

// serve is the event loop: ask select which sockets are ready, hand exactly those to the room's
// handlers, repeat. It returns when a signal has stopped it and every client is closed.
func serve(ln, sig, sndbuf int, svc *room) error {
	tr := svc.tr
	var clients []*conn         // connected clients, in order of arrival
	buf := make([]byte, 64<<10) // one buffer for every read: what must outlive the read is queued
	spare, err := openSpare()
	if err != nil {
		return fmt.Errorf("open the spare fd: %w", err)
	}
	var stopBy time.Time // when stopping: the moment to give up on sending what is queued
	for {
		if !stopBy.IsZero() && (time.Now().After(stopBy) || len(clients) == 0) {
			for _, c := range clients {
				end(c, "shutdown", tr)
				unix.Close(c.fd)
			}
			unix.Close(sig)
			unix.Close(spare)
			return nil
		}
		// Rebuild the sets every turn from what each client wants: select overwrites them with the result.
		reading, writing, top := []int{ln, sig}, []int{}, max(ln, sig)
		if !stopBy.IsZero() {
			reading = nil // stopping: nothing more is accepted or heard, only what is queued is sent
		}
		for _, c := range clients {
			if c.wantRead && stopBy.IsZero() || c.lingering {
				reading = append(reading, c.fd)
			}
			if c.wantWrite {
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
		tr.SelectReady(reading, writing, &readable, &writable)

		// Handle what select reported, not what was asked (B6). A client ready both ways is read first,
		// then written: one turn serves both.
		for _, c := range clients {
			switch {
			case readable.IsSet(c.fd) && c.lingering:
				discard(c, buf, tr)
			case readable.IsSet(c.fd):
				svc.read(c, buf)
			}
			if c.wantWrite && writable.IsSet(c.fd) {
				svc.write(c)
			}
			if !stopBy.IsZero() && !c.wantWrite && !c.wantClose && !c.lingering {
				linger(c, tr) // stopping, and everything is sent: close gently (signals.go)
			}
		}
		// A new client has sent nothing yet: it joins the lists on the next turn.
		if stopBy.IsZero() && readable.IsSet(ln) {
			if c, _ := accept(ln, &spare, sndbuf, tr); c != nil {
				clients = append(clients, c)
				svc.join(c)
			}
		}
		svc.endTurn()
		// Close the finished clients only now: clients changes after the walk over it (B8), and since
		// every list is rebuilt from clients, a client that leaves clients has left every list (B9).
		clients = slices.DeleteFunc(clients, closeIfFinished)
		if stopBy.IsZero() && readable.IsSet(sig) {
			var b [1]byte
			unix.Read(sig, b[:])
			tr.Note("signal", "%s: stop accepting, send what is queued (at most %v), then exit", unix.SignalName(unix.Signal(b[0])), shutdownGrace)
			unix.Close(ln)
			tr.Close(ln, "shutdown")
			stopBy = time.Now().Add(shutdownGrace)
			svc.stop()
			for _, c := range clients {
				if !c.wantWrite && !c.wantClose {
					linger(c, tr)
				}
			}
		}
	}
}

// closeIfFinished closes c if its handlers are finished with it, and reports whether it did.
func closeIfFinished(c *conn) bool {
	if c.wantClose {
		unix.Close(c.fd) // B2: a finished client gives its fd back
	}
	return c.wantClose
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
