//go:build linux || darwin

// Step 01: a blocking echo server, one client at a time.
//
// The simplest server there is: accept a client, then read from it and write back until it leaves, then
// accept the next. Every call blocks, so while the server waits in read for the first client, it cannot
// accept or answer a second one. The kernel still completes the second client's connect (it sits in the
// listen backlog), so that client thinks it is connected, sends, and waits. The trace shows where the
// server is stuck: every "block" line is a call that waits for one particular socket.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"

	_ "embed"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
)

//go:embed scenarios/seed.txt
var seedScenario string

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	trace := flag.Bool("trace", true, "write the trace to stdout")
	fds := flag.Bool("fds", false, "show fd numbers in the trace (they change from run to run)")
	demo := flag.Bool("demo", false, "play the seed's operation steps against this program and show the trace")
	flag.Parse()
	if *demo {
		os.Exit(replay.Demo(os.Stdout, "step01-blocking", "scenarios/seed.txt", seedScenario, "-fds="+fmt.Sprint(*fds)))
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "step01-blocking: unexpected argument %q: flags are written -name=value (see -h)\n", flag.Arg(0))
		os.Exit(2)
	}

	var tr *tracing.Recorder // nil: tracing off
	if *trace {
		tr = tracing.New(os.Stdout, *fds)
	}
	ln, bound, err := listen(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step01-blocking: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step01-blocking: listening on %s (try: nc %s %d)\n", bound, bound.Addr(), bound.Port())
	tr.Listen(ln)
	if err := serve(ln, tr); err != nil {
		fmt.Fprintf(os.Stderr, "step01-blocking: %v\n", err)
		os.Exit(1)
	}
}

// listen opens a TCP socket, binds it to addr and listens. Everything stays blocking.
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
			// The backlog: how many finished handshakes the kernel holds for us while we are busy.
			err = unix.Listen(fd, 128)
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

// serve accepts one client and echoes to it until it leaves; only then does it accept the next.
func serve(ln int, tr *tracing.Recorder) error {
	buf := make([]byte, 64<<10)
	for {
		tr.Block("accept", ln)
		fd, _, err := unix.Accept(ln)
		if errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EINTR) {
			continue // the client left before we took it, or a signal came: wait again
		}
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		unix.CloseOnExec(fd)
		tr.Accept(fd)
		for echo(fd, buf, tr) {
		}
		unix.Close(fd)
	}
}

// echo blocks until fd sends something, then writes it back. It reports false when fd is finished.
func echo(fd int, buf []byte, tr *tracing.Recorder) bool {
	tr.Block("read", fd)
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
		tr.ReadEOF(fd)
		tr.Close(fd, "EOF")
		return false
	}
	tr.Read(fd, buf[:n])
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
