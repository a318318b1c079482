//go:build linux || darwin

// Step 02: one thread serves every client, with select.
//
// This is the seed's example 1 done right. Each turn of the loop builds the set of sockets to watch
// (the listener and every client), asks select which of them are ready, and handles only those:
// a ready listener has a client to accept, a ready client has bytes to echo, or has closed.
// The trace shows both lists on every turn, like the seed's "inputs:" and "resaults:".
//
// What it fixes from the seed: EOF closes and forgets the socket (B1, B2); select has no timeout, so
// the loop wakes only when there is work (B4); a client whose fd does not fit in an FdSet is refused,
// not fatal (B19). What it keeps, on purpose: the echo is a blocking write, so one client that stops
// reading stalls everyone (B3). Step 03 fixes that.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"

	_ "embed"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
)

// fdSetSize is FD_SETSIZE: an FdSet has one bit for each fd from 0 to 1023 (on Linux and macOS).
const fdSetSize = 1024

//go:embed scenarios/seed.txt
var seedScenario string

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	trace := flag.Bool("trace", true, "write the trace to stdout")
	fds := flag.Bool("fds", false, "show fd numbers in the trace (they change from run to run)")
	sndbuf := flag.Int("sndbuf", 0, "if set, SO_SNDBUF for each client socket: small values show a slow reader sooner")
	demo := flag.Bool("demo", false, "play the seed's operation steps against this program and show the trace")
	flag.Parse()
	if *demo {
		os.Exit(replay.Demo(os.Stdout, "step02-select-echo", "scenarios/seed.txt", seedScenario, "-fds="+fmt.Sprint(*fds)))
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "step02-select-echo: unexpected argument %q: flags are written -name=value (see -h)\n", flag.Arg(0))
		os.Exit(2)
	}

	var tr *tracing.Recorder // nil: tracing off
	if *trace {
		tr = tracing.New(os.Stdout, *fds)
	}
	ln, bound, err := listen(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step02-select-echo: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step02-select-echo: listening on %s (try: nc %s %d)\n", bound, bound.Addr(), bound.Port())
	tr.Listen(ln)
	if err := serve(ln, *sndbuf, tr); err != nil {
		fmt.Fprintf(os.Stderr, "step02-select-echo: %v\n", err)
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

// serve is the event loop: ask select which sockets are ready, handle exactly those, repeat.
func serve(ln, sndbuf int, tr *tracing.Recorder) error {
	var clients []int           // connected sockets, in order of arrival
	buf := make([]byte, 64<<10) // one buffer for every read: nothing is kept between reads
	for {
		// Rebuild the set every turn: select overwrites it with the result.
		watched := append([]int{ln}, clients...)
		var readable unix.FdSet
		for _, fd := range watched {
			readable.Set(fd)
		}
		tr.Select(watched, nil, nil)
		if err := selectRead(slices.Max(watched)+1, &readable); err != nil {
			return fmt.Errorf("select: %w", err)
		}
		var ready []int
		for _, fd := range watched {
			if readable.IsSet(fd) {
				ready = append(ready, fd)
			}
		}
		tr.Selected(ready, nil, nil)

		// Walk the ready list, not the watched one, and change clients only: ready stays intact (B8).
		for _, fd := range ready {
			if fd == ln {
				if c, ok := accept(ln, sndbuf, tr); ok {
					clients = append(clients, c)
				}
				continue
			}
			if !echo(fd, buf, tr) {
				unix.Close(fd) // B2: a finished client gives its fd back
				clients = slices.DeleteFunc(clients, func(c int) bool { return c == fd })
			}
		}
	}
}

// selectRead waits, with no timeout, until a socket in set is readable. select returns EINTR when a
// signal arrives (the Go runtime sends them to preempt goroutines): then it asks again, with the
// original set, because the kernel may have written into it.
func selectRead(nfd int, set *unix.FdSet) error {
	asked := *set
	for {
		_, err := unix.Select(nfd, set, nil, nil, nil)
		if err != unix.EINTR {
			return err
		}
		*set = asked
	}
}

// accept takes one client from the listener. Its socket stays blocking, as in the seed: see echo.
func accept(ln, sndbuf int, tr *tracing.Recorder) (int, bool) {
	fd, _, err := unix.Accept(ln)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ECONNABORTED) {
		tr.Again(ln, "accept") // the client left before we got to it
		return -1, false
	}
	if err != nil {
		tr.Error(ln, "accept", err)
		return -1, false
	}
	unix.CloseOnExec(fd)
	unix.SetNonblock(fd, false) // on macOS an accepted socket inherits the listener's O_NONBLOCK
	tr.Accept(fd)
	if fd >= fdSetSize {
		// FdSet.Set would panic (or, in C, write past the set). Refuse this one client; serve the rest (B19).
		unix.Write(fd, []byte("server full: this server uses select, which cannot watch more than 1024 fds\n"))
		unix.Close(fd)
		tr.Close(fd, "refused: fd past FD_SETSIZE")
		return -1, false
	}
	if sndbuf > 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf)
	}
	return fd, true
}

// echo reads what fd sent and writes it straight back. It reports false when fd is finished.
func echo(fd int, buf []byte, tr *tracing.Recorder) bool {
	n, err := unix.Read(fd, buf)
	switch {
	case errors.Is(err, unix.ECONNRESET):
		tr.Error(fd, "read", err)
		tr.Close(fd, "reset")
		return false
	case err != nil:
		tr.Error(fd, "read", err)
		tr.Close(fd, "error")
		return false
	case n == 0:
		// B1: a read of 0 bytes is EOF. The seed ignored it, and select reported the socket readable forever.
		tr.ReadEOF(fd)
		tr.Close(fd, "EOF")
		return false
	}
	tr.Read(fd, buf[:n])
	// The seed's r.send(data): a blocking write. If this client does not read, its buffers fill and the
	// write blocks the whole loop: every other client waits (B3).
	for p := buf[:n]; len(p) > 0; {
		w, err := unix.Write(fd, p)
		if err != nil {
			tr.Error(fd, "write", err)
			tr.Close(fd, "error")
			return false
		}
		tr.Write(fd, w, len(p))
		p = p[w:]
	}
	return true
}
