//go:build linux || darwin

// Step 03: one thread serves every client, with select and a write queue per client.
//
// This is the seed's example 2 (message queues and a write list) done right. Step 02 wrote each echo
// straight back with a blocking write, so one client that stopped reading stalled everyone (B3). Here
// every socket is nonblocking, and a write may take fewer bytes than it was given, or none (EAGAIN).
// So the echo no longer writes where it reads: it appends the bytes to the client's queue, and the
// client is in select's write list exactly while that queue is not empty. When select reports it
// writable, the loop writes from the queue's cursor until the queue is empty or the socket is full.
//
// What it fixes from the seed: a slow reader stalls nobody and loses nothing (B3); a read appends to
// the queue the client has (B5); writes go only to sockets select reported writable (B6); a wake
// writes everything it can, in order (B7); lists change only after the walk over them (B8); a client
// that fails leaves every list and is closed (B9). New here: backpressure. A client whose queue passes
// the high-water mark is not read from until its queue falls below the low-water mark, so what one
// client makes the server hold is bounded.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"slices"
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
	if *low < 1 || *low > *high {
		fmt.Fprintf(os.Stderr, "step03-write-queues: want 1 <= -lowwater (%d) <= -highwater (%d)\n", *low, *high)
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
	if err := serve(ln, sig, *sndbuf, *high, *low, tr); err != nil {
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

// conn is one client: its socket, and the bytes it sent that have not yet gone back to it.
type conn struct {
	fd     int
	out    []byte // the queue: bytes read from the client, in order; out[sent:] still has to be written
	sent   int    // the cursor: how much of out is written already
	paused bool   // the queue passed the high-water mark: not reading from this client for now
	eof    bool   // the client sent FIN: nothing more to read, close once the queue is empty
}

// pending is how many queued bytes still have to be written.
func (c *conn) pending() int { return len(c.out) - c.sent }

// busy reports whether c still has something to send.
func (c *conn) busy() bool { return c.pending() > 0 }

// serve is the event loop: ask select which sockets are ready, handle exactly those, repeat. It
// returns when a signal has stopped it and every client is closed.
func serve(ln, sig, sndbuf, high, low int, tr *tracing.Recorder) error {
	var clients []*conn         // connected clients, in order of arrival
	buf := make([]byte, 64<<10) // one buffer for every read: what must outlive the read is queued
	spare, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the spare fd: %w", err)
	}
	var stopBy time.Time // when stopping: the moment to give up on sending what is queued
	for {
		if !stopBy.IsZero() && (time.Now().After(stopBy) || !slices.ContainsFunc(clients, (*conn).busy)) {
			for _, c := range clients {
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
		for _, c := range clients {
			if !c.paused && !c.eof && stopBy.IsZero() {
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
		// clients changes after it (B8), and since every list is rebuilt from clients, a client that
		// leaves clients has left every list (B9).
		for _, c := range clients {
			open := true
			if readable.IsSet(c.fd) {
				open = echo(c, buf, high, tr)
			}
			if open && writable.IsSet(c.fd) {
				open = flush(c, low, tr)
			}
			if !open {
				unix.Close(c.fd) // B2: a finished client gives its fd back
				c.fd = -1
			}
		}
		clients = slices.DeleteFunc(clients, func(c *conn) bool { return c.fd < 0 })
		// A new client has sent nothing yet: it joins the lists on the next turn.
		if stopBy.IsZero() && readable.IsSet(ln) {
			if c, ok := accept(ln, &spare, sndbuf, tr); ok {
				clients = append(clients, c)
			}
		}
		if stopBy.IsZero() && readable.IsSet(sig) {
			var b [1]byte
			unix.Read(sig, b[:])
			tr.Note("signal", "%s: stop accepting, send what is queued (at most %v), then exit", unix.SignalName(unix.Signal(b[0])), shutdownGrace)
			unix.Close(ln)
			tr.Close(ln, "shutdown")
			stopBy = time.Now().Add(shutdownGrace)
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
			unix.Write(fd, []byte("server busy: out of file descriptors, try again later\n"))
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
	tr.Accept(fd)
	if fd >= fdSetSize {
		// FdSet.Set would panic (or, in C, write past the set). Refuse this one client; serve the rest (B19).
		unix.Write(fd, []byte("server full: this server uses select, which cannot watch more than 1024 fds\n"))
		unix.Close(fd)
		tr.Close(fd, "refused: fd past FD_SETSIZE")
		return nil, false
	}
	if sndbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	return &conn{fd: fd}, true
}

// echo reads what c sent and queues it, to be written back when c is writable (see flush). It reports
// false when c is finished.
func echo(c *conn, buf []byte, high int, tr *tracing.Recorder) bool {
	n, err := unix.Read(c.fd, buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		tr.Again(c.fd, "read") // nothing after all: select will say when there is
		return true
	case errors.Is(err, unix.ECONNRESET):
		tr.Error(c.fd, "read", err)
		drop(c, tr)
		tr.Close(c.fd, "reset")
		return false
	case err != nil:
		tr.Error(c.fd, "read", err)
		drop(c, tr)
		tr.Close(c.fd, "error")
		return false
	case n == 0:
		// B1: a read of 0 bytes is EOF. The seed ignored it, and select reported the socket readable forever.
		tr.ReadEOF(c.fd)
		if c.pending() == 0 {
			tr.Close(c.fd, "EOF")
			return false
		}
		// FIN ends what the client sends, not what it reads (it may have half-closed): finish the echo.
		c.eof = true
		tr.Event("finish", c.fd, "%d bytes still to send, then close", c.pending())
		return true
	}
	tr.Read(c.fd, buf[:n])
	// B5: append to the queue this client has, never start a new one. Bytes already sent are dropped
	// first, so the queue holds only what is pending.
	c.out = append(c.out[:0], c.out[c.sent:]...)
	c.sent = 0
	c.out = append(c.out, buf[:n]...)
	tr.Queue(c.fd, n, c.pending())
	if c.pending() >= high {
		// Backpressure: reading more would only grow the queue. The client's bytes wait in the kernel,
		// and once its buffers fill, the client's own writes block: it slows down to the pace it reads at.
		c.paused = true
		tr.Event("pause", c.fd, "reading: %d pending >= high-water %d", c.pending(), high)
	}
	return true
}

// flush writes c's queue from the cursor on, until the queue is empty or the socket is full: select
// said c is writable, so the first write takes something (B6); each write may take less than it was
// given, and the rest stays queued, in order, for the next time c is writable (B7). It reports false
// when c is finished.
func flush(c *conn, low int, tr *tracing.Recorder) bool {
	before := c.pending()
	for c.pending() > 0 {
		n, err := unix.Write(c.fd, c.out[c.sent:])
		if errors.Is(err, unix.EAGAIN) {
			tr.Again(c.fd, "write") // the socket's buffer is full: wait in select until it has room
			break
		}
		if err != nil {
			// ECONNRESET or EPIPE: the client reset the connection, nobody will read the rest (B9).
			tr.Error(c.fd, "write", err)
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
	if c.paused && c.pending() < low {
		c.paused = false
		tr.Event("resume", c.fd, "reading: %d pending < low-water %d", c.pending(), low)
	}
	if c.eof && c.pending() == 0 {
		tr.Close(c.fd, "EOF")
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
