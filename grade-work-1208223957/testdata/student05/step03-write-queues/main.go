//go:build linux || darwin

// Step 03: one thread serves every client, with select and a write queue per client. Parent: step 02.
//
// This is the seed's example 2 (message queues and a write list) done right. Step 02 wrote each echo
// straight back with a blocking write, so one client that stopped reading stalled everyone (B3). This
// step adds five things, in the order the lesson teaches them:
//
//  1. Nonblocking sockets and a queue per client: a write may take fewer bytes than it was given, or
//     none (EAGAIN), so the echo no longer writes where it reads; it appends to the client's queue
//     (echo.go), and a cursor remembers how much of it is written.
//  2. The write list: a client is in select's write list exactly while its queue is not empty, and
//     when select reports it writable the loop writes from the cursor until the queue is empty or the
//     socket is full.
//  3. Backpressure: a client whose queue passes the high-water mark is not read from until its queue
//     falls below the low-water mark, so what one client makes the server hold is bounded.
//  4. A clean stop: SIGINT or SIGTERM reaches the loop as a byte on a pipe (signals.go), and the
//     server sends what is queued, for at most a grace period, before it exits.
//  5. A spare fd for the moment the process runs out of them (accept.go), so that a full fd table
//     refuses one client instead of spinning the loop.
//
// The handlers (echo.go) say what they want next for each client in its want fields (conn.go); only
// the loop turns that into select's lists. What it fixes from the seed: a slow reader stalls nobody and
// loses nothing (B3); a read appends to the queue the client has (B5); writes go only to sockets select
// reported writable (B6); a wake writes everything it can, in order (B7); lists change only after the
// walk over them (B8); a client that fails leaves every list and is closed (B9).
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

//go:embed scenarios/slow-reader.txt
var slowReaderScenario string

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	trace := flag.Bool("trace", true, "write the trace to stdout")
	fds := flag.Bool("fds", false, "show fd numbers in the trace (they change from run to run)")
	sndbuf := flag.Int("sndbuf", 0, "if set, SO_SNDBUF for each client socket: small values show a slow reader sooner")
	high := flag.Int("highwater", 64<<10, "stop reading from a client while this many bytes wait to be sent back to it")
	low := flag.Int("lowwater", 16<<10, "read from a paused client again once fewer than this many bytes wait")
	demo := flag.Bool("demo", false, "play a slow reader and a second client against this program and show the trace")
	flag.Parse()
	if *demo {
		os.Exit(replay.Demo(os.Stdout, "step03-write-queues", "scenarios/slow-reader.txt", slowReaderScenario, "-fds="+fmt.Sprint(*fds)))
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "step03-write-queues: unexpected argument %q: flags are written -name=value (see -h)\n", flag.Arg(0))
		os.Exit(2)
	}
	if *low < 1 || *low > *high || *sndbuf < 0 {
		fmt.Fprintf(os.Stderr, "step03-write-queues: want 1 <= -lowwater (%d) <= -highwater (%d), and -sndbuf (%d) >= 0\n", *low, *high, *sndbuf)
		os.Exit(2)
	}

	var tr *tracing.Recorder // nil: tracing off
	if *trace {
		tr = tracing.New(os.Stdout, *fds)
	}
	ln, bound, err := listen(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step03-write-queues: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step03-write-queues: listening on %s (try: nc %s %d)\n", bound, bound.Addr(), bound.Port())
	tr.Listen(ln)
	sig, err := signalPipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "step03-write-queues: %v\n", err)
		os.Exit(1)
	}
	tr.Name(sig, "signals")
	if err := serve(ln, sig, *sndbuf, &echo{high: *high, low: *low, tr: tr}); err != nil {
		fmt.Fprintf(os.Stderr, "step03-write-queues: %v\n", err)
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

// serve is the event loop: ask select which sockets are ready, hand exactly those to the echo's
// handlers, repeat. It returns when a signal has stopped it and every client is closed.
func serve(ln, sig, sndbuf int, svc *echo) error {
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
			}
		}
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
