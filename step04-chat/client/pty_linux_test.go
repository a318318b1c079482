package main

// The client at a real terminal: a pseudo-terminal whose slave side is the client's stdin and stdout,
// as a terminal window's would be, and whose master side the test types into and reads the screen from.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing/tracetest"
)

// openPty opens a pseudo-terminal pair the way posix_openpt, unlockpt and ptsname do.
func openPty(t *testing.T) (master int, slave *os.File) {
	t.Helper()
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		t.Skip("no /dev/ptmx: this machine has no pseudo-terminals")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(master) })
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil { // unlockpt
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN) // ptsname: /dev/pts/N
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Close() })
	return master, slave
}

// ptyClient is the real client binary running on a pseudo-terminal.
type ptyClient struct {
	t      *testing.T
	master int
	slave  *os.File     // kept open by the test, to read the terminal's modes after the client exits
	modes  unix.Termios // the terminal's modes before the client started
	screen screenModel  // what the master has read so far
	cmd    *exec.Cmd
	stderr bytes.Buffer // the client's own messages, kept apart from the screen
	exited chan struct{}
	err    error // from Wait, once exited is closed
}

func startOnPty(t *testing.T, addr string) *ptyClient {
	t.Helper()
	p := &ptyClient{t: t, exited: make(chan struct{})}
	p.master, p.slave = openPty(t)
	modes, err := unix.IoctlGetTermios(int(p.slave.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	p.modes = *modes
	p.cmd = exec.Command(tracetest.Binary(t, "."), "-addr", addr)
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = p.slave, p.slave, &p.stderr
	// A session of its own with the terminal as its controlling terminal, as a shell would start it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	p.expectScreen("> ") // raw mode is on before the prompt is drawn: typing may start
	return p
}

// typeKeys writes keys to the terminal, as a person typing.
func (p *ptyClient) typeKeys(keys string) {
	p.t.Helper()
	for b := []byte(keys); len(b) > 0; {
		n, err := unix.Write(p.master, b)
		if err != nil {
			p.t.Fatalf("typing %q: %v", keys, err)
		}
		b = b[n:]
	}
}

// expectScreen reads the terminal's output until the screen shows want, line by line, with the cursor
// at the end of the last line; it fails after within.
func (p *ptyClient) expectScreen(want ...string) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	buf := make([]byte, 4096)
	for !slices.Equal(p.screen.text(), want) || !p.screen.cursorAtEnd() {
		left := time.Until(deadline)
		if left <= 0 {
			p.t.Fatalf("the screen shows:\n%s\nwant, within %v:\n%s", strings.Join(p.screen.text(), "\n"), within, strings.Join(want, "\n"))
		}
		fds := []unix.PollFd{{Fd: int32(p.master), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR || n == 0 {
			continue
		}
		if err != nil {
			p.t.Fatal(err)
		}
		k, err := unix.Read(p.master, buf)
		if err != nil {
			p.t.Fatalf("reading the terminal: %v; the screen shows:\n%s", err, strings.Join(p.screen.text(), "\n"))
		}
		p.screen.Write(buf[:k])
	}
	if len(p.screen.unknown) > 0 {
		p.t.Fatalf("the client wrote escape sequences the test does not know: %q", p.screen.unknown)
	}
}

// expectExit waits for the client to exit with status, checks that it left the terminal's modes as it
// found them, and returns its stderr.
func (p *ptyClient) expectExit(status int) string {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		p.t.Fatalf("client still running after %v", within)
	}
	got := 0
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		got = exit.ExitCode()
	} else if p.err != nil {
		p.t.Fatalf("client: %v", p.err)
	}
	if got != status {
		p.t.Fatalf("client ended with %v, want exit status %d; stderr:\n%s", p.err, status, &p.stderr)
	}
	modes, err := unix.IoctlGetTermios(int(p.slave.Fd()), unix.TCGETS)
	if err != nil {
		p.t.Fatal(err)
	}
	if *modes != p.modes {
		p.t.Errorf("the terminal was left in other modes: lflag %#o, was %#o (ICANON %#o, ECHO %#o)", modes.Lflag, p.modes.Lflag, unix.ICANON, unix.ECHO)
	}
	return p.stderr.String()
}

// The student's report (issue 21, item 9): "I am typing half a libob: interrupting you". At a
// terminal, the room's line now goes on a line of its own, and the half-typed line is drawn again
// below it, where typing goes on.
func TestTerminalRoomLineDoesNotLandInTheTyping(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startOnPty(t, addr)
	conn := acceptOne(t, ln)
	c.typeKeys("I am typing half a li")
	c.expectScreen("> I am typing half a li") // echoed by the client: it holds the half line now
	writeAll(t, conn, "bob: interrupting you\n")
	c.expectScreen("bob: interrupting you", "> I am typing half a li")
	c.typeKeys("ne\r")
	want := "I am typing half a line\n"
	if got := readN(t, conn, len(want)); got != want {
		t.Fatalf("server got %q, want %q", got, want)
	}
	c.expectScreen("bob: interrupting you", "> I am typing half a line", "> ")
}

// Backspace erases a character however many bytes it is, Ctrl-U the whole line; only Enter sends.
func TestTerminalEditingKeys(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startOnPty(t, addr)
	conn := acceptOne(t, ln)
	c.typeKeys("café ☕")
	c.expectScreen("> café ☕")
	c.typeKeys("\x7f\x7f")
	c.expectScreen("> café")
	c.typeKeys("\x15")
	c.expectScreen("> ")
	c.typeKeys("thé\r")
	if got := readN(t, conn, len("thé\n")); got != "thé\n" {
		t.Fatalf("server got %q, want %q", got, "thé\n")
	}
}

// Ctrl-D on an empty line is the end of input, as today's client at the end of a pipe: the server reads
// EOF, what it sends after is still shown, and the client exits 0 with the terminal as it was.
func TestTerminalCtrlDHalfCloses(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startOnPty(t, addr)
	conn := acceptOne(t, ln)
	c.typeKeys("x\x04y\r") // Ctrl-D after some text does nothing
	if got := readN(t, conn, 3); got != "xy\n" {
		t.Fatalf("server got %q, want %q", got, "xy\n")
	}
	c.expectScreen("> xy", "> ")
	c.typeKeys("\x04")
	if got := readAll(t, conn); got != "" {
		t.Fatalf("server got %q after the Ctrl-D, want EOF", got)
	}
	writeAll(t, conn, "* bye\n")
	unix.Close(conn)
	c.expectScreen("> xy", "* bye", "")
	c.expectExit(0)
}

// Ctrl-C leaves at once, sends nothing of the half-typed line, and puts the terminal back.
func TestTerminalCtrlCLeavesAndRestoresTheTerminal(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startOnPty(t, addr)
	conn := acceptOne(t, ln)
	c.typeKeys("never mind")
	c.expectScreen("> never mind")
	c.typeKeys("\x03")
	if got := readAll(t, conn); got != "" {
		t.Fatalf("server got %q, want EOF and nothing before it", got)
	}
	c.expectScreen("")
	if stderr := c.expectExit(0); !strings.HasSuffix(stderr, "chat client: you left (Ctrl-C)\n") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

// The server closing the connection also puts the terminal back, and says why the status is 1.
func TestTerminalServerClosesAndRestoresTheTerminal(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startOnPty(t, addr)
	conn := acceptOne(t, ln)
	c.typeKeys("half")
	c.expectScreen("> half")
	writeAll(t, conn, "* the server is stopping\n")
	unix.Close(conn)
	c.expectScreen("* the server is stopping", "")
	if stderr := c.expectExit(1); !strings.HasSuffix(stderr, "\n"+serverClosedLine+"\n") {
		t.Errorf("stderr does not end with %q:\n%s", serverClosedLine, stderr)
	}
}

// A signal (kill, or the terminal window closing) ends the client in raw mode too: the terminal must
// not be left without echo.
func TestTerminalRestoredOnSignal(t *testing.T) {
	for _, sig := range []unix.Signal{unix.SIGTERM, unix.SIGHUP, unix.SIGINT} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			ln, addr := fakeServer(t)
			c := startOnPty(t, addr)
			acceptOne(t, ln)
			c.typeKeys("abc")
			c.expectScreen("> abc")
			if err := c.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if stderr := c.expectExit(128 + int(sig)); !strings.Contains(stderr, "chat client: stopped by "+sig.String()) {
				t.Errorf("stderr:\n%s", stderr)
			}
		})
	}
}
