//go:build linux || darwin

// The chat room's client: one loop, one thread, two fds to watch: the keyboard (stdin, fd 0) and the
// socket. This is the seed's client idea, select on both and serve whichever is ready, with its
// defects fixed:
//
//   - When the server closes or resets the connection, the client says so and exits with status 1.
//     The seed's client did "if not data: continue", and select then reported the closed socket
//     readable forever: a busy loop (B17).
//   - End of input (Ctrl-D, or the end of a piped file) half-closes the socket with shutdown(SHUT_WR):
//     the server sees EOF and lets us leave, and we still print what arrives until it closes; then
//     status 0. So a script can pipe lines in and read the room's replies out.
//   - Typed bytes go out as the socket takes them (it is nonblocking), and stdin is not read again
//     until they have all gone, so a flood of input cannot pile up here.
//
// Chat lines go to stdout; the client's own messages go to stderr. Where select cannot watch stdin
// (Windows: B18), unsupported.go says so instead.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

const stdin = 0

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "the chat server's address, IP:port")
	flag.Parse()
	sock, err := dial(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chat client: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "chat client: connected to %s; type a line to send it, /quit or end of input (Ctrl-D) to leave\n", *addr)
	status, why := chat(sock, os.Stdout)
	if why != "" {
		fmt.Fprintf(os.Stderr, "chat client: %s\n", why)
	}
	os.Exit(status)
}

// dial connects a TCP socket to addr, then makes it nonblocking for the loop.
func dial(addr string) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, fmt.Errorf("-addr %q: want IP:port, e.g. 127.0.0.1:8000", addr)
	}
	family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	if ap.Addr().Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	unix.CloseOnExec(fd)
	for err = unix.Connect(fd, sa); err == unix.EINTR; err = unix.Connect(fd, sa) {
	}
	if err == nil && fd >= 1024 {
		err = fmt.Errorf("fd %d does not fit in select's set (FD_SETSIZE 1024)", fd)
	}
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("cannot connect to %s: %w", addr, err)
	}
	return fd, nil
}

// chat is the loop: select on stdin and the socket, copy the socket to out and stdin to the socket.
// It returns the exit status and, for status 1, why.
func chat(sock int, out io.Writer) (status int, why string) {
	var pending []byte // typed bytes the socket has not taken yet
	typing := true     // stdin is still open
	shut := false      // we sent our FIN (shutdown SHUT_WR)
	var quit quitWatch
	buf := make([]byte, 4096)
	for {
		var r, w unix.FdSet
		r.Set(sock)
		if typing && len(pending) == 0 {
			r.Set(stdin) // read the keyboard only once the last input has gone out
		}
		if len(pending) > 0 {
			w.Set(sock)
		}
		if err := selectRetry(sock+1, &r, &w); err != nil {
			return 1, "select: " + err.Error()
		}

		if r.IsSet(sock) {
			n, err := unix.Read(sock, buf)
			switch {
			case err == unix.EAGAIN:
			case err == unix.ECONNRESET:
				return 1, "the server reset the connection (ECONNRESET)"
			case err != nil:
				return 1, "read from the server: " + err.Error()
			case n == 0 && (shut || quit.seen):
				return 0, "" // we said goodbye (end of input, or /quit) and the server has closed too
			case n == 0:
				return 1, "the server closed the connection" // B17: EOF ends the loop, it is not "no data yet"
			default:
				out.Write(buf[:n])
			}
		}
		if r.IsSet(stdin) {
			n, err := unix.Read(stdin, buf)
			switch {
			case err == unix.EAGAIN:
			case n <= 0:
				typing = false // end of input (or a broken terminal): leave the room politely
			default:
				pending = append(pending, buf[:n]...)
				quit.scan(buf[:n])
			}
		}
		if w.IsSet(sock) {
			n, err := unix.Write(sock, pending)
			switch {
			case err == unix.EAGAIN:
			case err == unix.EPIPE || err == unix.ECONNRESET:
				return 1, "the server closed the connection before taking our input (" + err.Error() + ")"
			case err != nil:
				return 1, "write to the server: " + err.Error()
			default:
				pending = pending[n:]
			}
		}
		if !typing && len(pending) == 0 && !shut {
			// Half-close: the server reads EOF, we can still read whatever it sends before it closes.
			if err := unix.Shutdown(sock, unix.SHUT_WR); err != nil {
				return 1, "shutdown: " + err.Error()
			}
			shut = true
		}
	}
}

// selectRetry waits until a socket in r or w is ready, asking again with the same sets on EINTR.
func selectRetry(nfd int, r, w *unix.FdSet) error {
	r0, w0 := *r, *w
	for {
		_, err := unix.Select(nfd, r, w, nil, nil)
		if err != unix.EINTR {
			return err
		}
		*r, *w = r0, w0
	}
}

// quitWatch notices the user typing the command /quit, after which the server's close is the goodbye
// we asked for, not an accident. It keeps only the first bytes of each line: enough to tell.
type quitWatch struct {
	line []byte
	seen bool
}

func (q *quitWatch) scan(p []byte) {
	for _, c := range p {
		if c != '\n' {
			if len(q.line) < 16 {
				q.line = append(q.line, c)
			}
			continue
		}
		if f := strings.Fields(string(q.line)); len(f) > 0 && f[0] == "/quit" && bytes.HasPrefix(q.line, []byte("/")) {
			q.seen = true
		}
		q.line = q.line[:0]
	}
}
