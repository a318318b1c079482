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
//   - At a terminal, the client edits the line itself (terminal.go, editor.go), so that a line from
//     the room never lands in the middle of what you are typing.
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
	os.Exit(run())
}

// run is the client with its exit status returned, not passed to os.Exit, so that its deferred
// clean-up (putting the terminal back) runs first, on a panic too.
func run() int {
	addr := flag.String("addr", "127.0.0.1:8000", "the chat server's address, IP:port ([::1]:8000 for IPv6)")
	flag.Parse()
	sock, err := dial(*addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chat client: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "chat client: connected to %s; type a line to send it, /quit or end of input (Ctrl-D) to leave\n", *addr)
	con, err := openConsole(os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "chat client: %v\n", err)
		return 1
	}
	defer con.close()
	status, why := chat(sock, con)
	con.close() // the terminal is itself again before the last words
	if why != "" {
		fmt.Fprintf(os.Stderr, "chat client: %s\n", lastWords(status, why))
	}
	return status
}

// lastWords is the client's final line. After a status 1, "go run" prints "exit status 1", which
// reads like a crash, so the line says beforehand what that status means.
func lastWords(status int, why string) string {
	if status == 0 {
		return why
	}
	return fmt.Sprintf("%s, so the chat is over (exit status %d: it ended without you leaving; not a crash)", why, status)
}

// dial connects a TCP socket to addr, then makes it nonblocking for the loop.
func dial(addr string) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, fmt.Errorf("-addr %q: want IP:port, e.g. 127.0.0.1:8000", addr)
	}
	family, sa := sockaddr(ap)
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

// sockaddr turns an address into a socket family and address. Is6 comes first: As4 panics on an
// IPv6 address.
func sockaddr(ap netip.AddrPort) (family int, sa unix.Sockaddr) {
	if ap.Addr().Is6() {
		return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

// A console is the person's side of the loop: what they type goes through it to the server, and what
// the server sends goes through it to their screen. A pipe passes bytes as they are; a terminal edits
// the line (terminal.go).
type console interface {
	// typed takes bytes read from stdin and returns the bytes to send, and what the person asked for.
	typed(p []byte) (send []byte, asked request)
	// show puts bytes from the server on the screen.
	show(p []byte)
	// close leaves the screen tidy (and a terminal as it was); calling it again does nothing.
	close()
}

// request is what the person asked for with a key.
type request int

const (
	keepTyping request = iota
	endOfInput         // Ctrl-D on an empty line: leave politely, like the end of a piped file
	leaveNow           // Ctrl-C: leave at once
)

// openConsole returns a line-editing terminal when stdin and stdout are both terminals, and a plain
// pipe otherwise (the line discipline then echoes, or nobody needs an echo).
func openConsole(out *os.File) (console, error) {
	if !isTerminal(stdin) || !isTerminal(int(out.Fd())) {
		return pipe{out}, nil
	}
	return openTerminal(stdin, out)
}

// pipe is the console when stdin or stdout is not a terminal: bytes pass as they are.
type pipe struct{ out io.Writer }

func (p pipe) typed(b []byte) ([]byte, request) { return b, keepTyping }
func (p pipe) show(b []byte)                    { p.out.Write(b) }
func (p pipe) close()                           {}

// chat is the loop: select on stdin and the socket, copy the socket to the console and what the console
// makes of stdin to the socket. It returns the exit status and, for status 1, why.
func chat(sock int, con console) (status int, why string) {
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
				con.show(buf[:n])
			}
		}
		if r.IsSet(stdin) {
			n, err := unix.Read(stdin, buf)
			switch {
			case err == unix.EAGAIN:
			case n <= 0:
				typing = false // end of input (or a broken terminal): leave the room politely
			default:
				send, asked := con.typed(buf[:n])
				pending = append(pending, send...)
				quit.scan(send)
				switch asked {
				case endOfInput:
					typing = false
				case leaveNow:
					return 0, "you left (Ctrl-C)"
				}
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
