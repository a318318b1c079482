//go:build linux || darwin

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// within bounds every wait in these tests: a hang fails, it does not stall the run.
const within = 10 * time.Second

// proc is the real client binary, running, with its stdin a pipe the test writes to.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout, line by line; closed at EOF
	stderr bytes.Buffer
	exited chan struct{}
	err    error    // from Wait, once exited is closed
	screen []string // what the test typed ("typed: ...") and what the client printed, in order
}

func startClient(t *testing.T, addr string) *proc {
	t.Helper()
	p := &proc{t: t, lines: make(chan string, 1000), exited: make(chan struct{})}
	p.cmd = exec.Command(tracetest.Binary(t, "."), "-addr", addr)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for sc := bufio.NewScanner(stdout); sc.Scan(); {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// send types s on the client's stdin.
func (p *proc) send(s string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, s); err != nil {
		p.t.Fatalf("writing to the client's stdin: %v", err)
	}
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			p.screen = append(p.screen, "(typed) "+strings.TrimSuffix(l, "\n"))
		}
	}
}

// expectLine waits for the client to print want as its next line.
func (p *proc) expectLine(want string) {
	p.t.Helper()
	select {
	case got, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("client ended its output, want line %q; stderr: %s", want, p.stderrAfterExit())
		}
		if got != want {
			p.t.Fatalf("client printed %q, want %q", got, want)
		}
		p.screen = append(p.screen, got)
	case <-time.After(within):
		p.t.Fatalf("client did not print %q within %v", want, within)
	}
}

// expectExit waits for the client to exit with status and no more output; it returns its stderr.
func (p *proc) expectExit(status int) string {
	p.t.Helper()
	stderr := p.stderrAfterExit()
	for line := range p.lines { // closed by now: the output ended before the exit
		p.t.Errorf("client printed %q, want no more output", line)
	}
	got := 0
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		got = exit.ExitCode()
	} else if p.err != nil {
		p.t.Fatalf("client: %v", p.err)
	}
	if got != status {
		p.t.Fatalf("client exited with status %d, want %d; stderr:\n%s", got, status, stderr)
	}
	return stderr
}

func (p *proc) stderrAfterExit() string {
	select {
	case <-p.exited:
		return p.stderr.String()
	case <-time.After(within):
		p.t.Fatalf("client still running after %v (a client that spins on a closed socket never exits: B17)", within)
		return ""
	}
}

// fakeServer listens on a free loopback port; the test plays the server by hand, with blocking calls.
func fakeServer(t *testing.T) (ln int, addr string) {
	t.Helper()
	ln, addr, err := listenLoopback(t, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	return ln, addr
}

// fakeServer6 is fakeServer on the IPv6 loopback, [::1]. It skips the test on a machine without one,
// which it knows by failing to bind there.
func fakeServer6(t *testing.T) (ln int, addr string) {
	t.Helper()
	ln, addr, err := listenLoopback(t, unix.AF_INET6)
	if errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Skipf("no IPv6 loopback on this machine: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return ln, addr
}

// listenLoopback listens on a free port of the loopback address of family (AF_INET or AF_INET6).
func listenLoopback(t *testing.T, family int) (ln int, addr string, err error) {
	t.Helper()
	ip := netip.MustParseAddr("127.0.0.1")
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: ip.As4()}
	if family == unix.AF_INET6 {
		ip = netip.IPv6Loopback()
		sa = &unix.SockaddrInet6{Addr: ip.As16()}
	}
	ln, err = unix.Socket(family, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, "", fmt.Errorf("socket: %w", err)
	}
	t.Cleanup(func() { unix.Close(ln) })
	unix.CloseOnExec(ln)
	if err := unix.Bind(ln, sa); err != nil {
		return -1, "", fmt.Errorf("bind %v: %w", ip, err)
	}
	if err := unix.Listen(ln, 8); err != nil {
		return -1, "", fmt.Errorf("listen: %w", err)
	}
	bound, err := unix.Getsockname(ln)
	if err != nil {
		return -1, "", fmt.Errorf("getsockname: %w", err)
	}
	port := 0
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		port = b.Port
	case *unix.SockaddrInet6:
		port = b.Port
	}
	return ln, netip.AddrPortFrom(ip, uint16(port)).String(), nil
}

// waitReadable waits until fd has something to read (or EOF), failing the test after within.
func waitReadable(t *testing.T, fd int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(time.Until(deadline).Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
	}
	t.Fatalf("nothing to read within %v", within)
}

func acceptOne(t *testing.T, ln int) int {
	t.Helper()
	waitReadable(t, ln)
	fd, _, err := unix.Accept(ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// readAll reads from fd until EOF and returns what came.
func readAll(t *testing.T, fd int) string {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	for {
		waitReadable(t, fd)
		n, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatalf("read: %v (after %q)", err, got)
		}
		if n == 0 {
			return string(got)
		}
		got = append(got, buf[:n]...)
	}
}

// readN reads exactly n bytes from fd.
func readN(t *testing.T, fd, n int) string {
	t.Helper()
	got := make([]byte, 0, n)
	buf := make([]byte, n)
	for len(got) < n {
		waitReadable(t, fd)
		k, err := unix.Read(fd, buf[:n-len(got)])
		if err != nil || k == 0 {
			t.Fatalf("read: %v, EOF=%v, after %q", err, k == 0, got)
		}
		got = append(got, buf[:k]...)
	}
	return string(got)
}

func writeAll(t *testing.T, fd int, s string) {
	t.Helper()
	for p := []byte(s); len(p) > 0; {
		n, err := unix.Write(fd, p)
		if err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
}

// Typed lines reach the server as typed, and what the server sends is printed as it comes.
func TestClientSendsTypedLinesAndPrintsIncoming(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startClient(t, addr)
	conn := acceptOne(t, ln)
	c.send("hello\n")
	if got := readN(t, conn, 6); got != "hello\n" {
		t.Fatalf("server got %q, want %q", got, "hello\n")
	}
	writeAll(t, conn, "* bob: hi\nsecond line\n")
	c.expectLine("* bob: hi")
	c.expectLine("second line")
	c.send("a line typed in two\u00a0")
	c.send("parts\n")
	want := "a line typed in two\u00a0parts\n"
	if got := readN(t, conn, len(want)); got != want {
		t.Fatalf("server got %q, want %q", got, want)
	}
}

// B17: the seed's client read "" from a closed socket and went round again, forever. This one exits
// with status 1 and says why, while its stdin is still open.
func TestB17_ClientExitsWhenServerCloses(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startClient(t, addr)
	conn := acceptOne(t, ln)
	writeAll(t, conn, "* welcome\n")
	c.expectLine("* welcome")
	unix.Close(conn)
	if stderr := c.expectExit(1); !strings.Contains(stderr, "the server closed the connection") {
		t.Errorf("stderr does not say the server closed the connection:\n%s", stderr)
	}
}

// serverClosedLine is the client's last line when the server closes the connection. "go run" prints
// "exit status 1" after it (issue 20, item 1), so it says that the status means the chat ended, not a
// crash.
const serverClosedLine = "chat client: the server closed the connection, so the chat is over (exit status 1: it ended without you leaving; not a crash)"

func TestServerCloseLastLineExplainsTheExitStatus(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startClient(t, addr)
	unix.Close(acceptOne(t, ln))
	stderr := c.expectExit(1)
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if last := lines[len(lines)-1]; last != serverClosedLine {
		t.Errorf("last line:\n%s\nwant:\n%s", last, serverClosedLine)
	}
}

// A reset is reported as a reset, with status 1.
func TestB17_ClientExitsWhenServerResets(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startClient(t, addr)
	conn := acceptOne(t, ln)
	unix.SetsockoptLinger(conn, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(conn)
	if stderr := c.expectExit(1); !strings.Contains(stderr, "the server reset the connection") {
		t.Errorf("stderr does not say the server reset the connection:\n%s", stderr)
	}
}

// End of input half-closes the socket: the server reads the last line, then EOF; what it sends after
// that is still printed, and the client exits 0 when the server closes.
func TestClientEndOfInputHalfClosesAndPrintsTheRest(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startClient(t, addr)
	conn := acceptOne(t, ln)
	c.send("last words\n")
	c.stdin.Close()
	if got := readAll(t, conn); got != "last words\n" {
		t.Fatalf("server got %q then EOF, want %q then EOF", got, "last words\n")
	}
	writeAll(t, conn, "* sent after your EOF\n")
	unix.Close(conn)
	c.expectLine("* sent after your EOF")
	c.expectExit(0)
}

// Input is not lost when it is more than the socket takes at once: the client writes as the socket
// drains, and reads stdin again only when everything typed so far has gone.
func TestClientSendsLargeInputWhole(t *testing.T) {
	ln, addr := fakeServer(t)
	c := startClient(t, addr)
	conn := acceptOne(t, ln)
	unix.SetsockoptInt(conn, unix.SOL_SOCKET, unix.SO_RCVBUF, 16384)
	var want strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&want, "line %05d of a long piped file\n", i)
	}
	go func() {
		io.WriteString(c.stdin, want.String())
		c.stdin.Close()
	}()
	if got := readAll(t, conn); got != want.String() {
		t.Fatalf("server got %d bytes, want %d (first difference at %d)", len(got), want.Len(), firstDiff(got, want.String()))
	}
	unix.Close(conn)
	c.expectExit(0)
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// -addr [::1]:PORT: the client used to call As4 before asking Is6, and As4 panics on an IPv6 address.
func TestClientConnectsOverIPv6(t *testing.T) {
	ln, addr := fakeServer6(t)
	if !strings.HasPrefix(addr, "[::1]:") {
		t.Fatalf("the fake server listens on %s, want [::1]:PORT", addr)
	}
	c := startClient(t, addr)
	conn := acceptOne(t, ln)
	c.send("hello over IPv6\n")
	if got := readN(t, conn, len("hello over IPv6\n")); got != "hello over IPv6\n" {
		t.Fatalf("server got %q", got)
	}
	writeAll(t, conn, "* hi\n")
	c.expectLine("* hi")
}

func TestSockaddrPicksTheFamily(t *testing.T) {
	for _, tc := range []struct {
		addr   string
		family int
	}{
		{"127.0.0.1:8000", unix.AF_INET},
		{"[::1]:8000", unix.AF_INET6},
		{"[::ffff:127.0.0.1]:8000", unix.AF_INET6}, // IPv4-mapped: an IPv6 socket reaches it
	} {
		if family, _ := sockaddr(netip.MustParseAddrPort(tc.addr)); family != tc.family {
			t.Errorf("%s: family %d, want %d", tc.addr, family, tc.family)
		}
	}
}

// Nobody listening: one clear line and status 1.
func TestClientCannotConnect(t *testing.T) {
	ln, addr := fakeServer(t)
	unix.Close(ln) // the port is free again: connect is refused
	c := startClient(t, addr)
	if stderr := c.expectExit(1); !strings.Contains(stderr, "cannot connect to "+addr) {
		t.Errorf("stderr:\n%s", stderr)
	}
}

// B18: the seed's client crashed on Windows (WinError 10038: select takes sockets only). This one
// builds for Windows and there says, in one line, why it cannot run.
func TestB18_WindowsBuildSaysWhy(t *testing.T) {
	windowsOnce.Do(func() {
		bin := filepath.Join(os.TempDir(), fmt.Sprintf("muxlab-chat-client-%d.exe", os.Getpid()))
		defer os.Remove(bin)
		cmd := exec.Command("go", "build", "-o", bin, ".")
		cmd.Env = append(os.Environ(), "GOOS=windows", "GOARCH=amd64")
		if out, err := cmd.CombinedOutput(); err != nil {
			windowsErr = fmt.Errorf("GOOS=windows go build: %v\n%s", err, out)
			return
		}
		windowsExe, windowsErr = os.ReadFile(bin)
	})
	if windowsErr != nil {
		t.Fatal(windowsErr)
	}
	if !bytes.Contains(windowsExe, []byte("on Windows select accepts sockets only")) {
		t.Error("the Windows build does not carry the one-line explanation from unsupported.go")
	}
}

// The Windows build is made once per test process: -count=20 need not link it twenty times.
var (
	windowsOnce sync.Once
	windowsExe  []byte
	windowsErr  error
)

// chatServer starts the real step04 server, tracing off, on a free loopback port.
func chatServer(t *testing.T) *replay.Server {
	t.Helper()
	srv, err := replay.Start(tracetest.Binary(t, ".."), "-trace=false")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	return srv
}

// A real session: three people at the real client, typing through pipes, against the real server.
// Each waits for what the others should see before the next one types, so the screens are the same
// on every run; they are kept in testdata/three-clients.screens (docs/04-chat.md shows them).
func TestThreeClientsAgainstTheServer(t *testing.T) {
	srv := chatServer(t)
	alice := startClient(t, srv.Addr)
	alice.expectLine("* welcome, guest1; commands: /nick NAME, /who, /msg NAME TEXT, /quit")
	alice.send("/nick alice\n")
	alice.expectLine("* you are now alice")

	bob := startClient(t, srv.Addr)
	bob.expectLine("* welcome, guest2; commands: /nick NAME, /who, /msg NAME TEXT, /quit")
	alice.expectLine("* guest2 joined")
	bob.send("/nick bob\n")
	bob.expectLine("* you are now bob")
	alice.expectLine("* guest2 is now bob")

	carol := startClient(t, srv.Addr)
	carol.expectLine("* welcome, guest3; commands: /nick NAME, /who, /msg NAME TEXT, /quit")
	alice.expectLine("* guest3 joined")
	bob.expectLine("* guest3 joined")
	carol.send("/nick carol\n")
	carol.expectLine("* you are now carol")
	alice.expectLine("* guest3 is now carol")
	bob.expectLine("* guest3 is now carol")

	alice.send("hello, bob and carol\n")
	bob.expectLine("alice: hello, bob and carol")
	carol.expectLine("alice: hello, bob and carol")
	bob.send("/msg carol lunch at noon?\n")
	carol.expectLine("bob (private): lunch at noon?")
	bob.expectLine("* to carol (private): lunch at noon?")
	carol.send("/who\n")
	carol.expectLine("* in the room: alice, bob, carol")
	carol.send("sounds good\n")
	alice.expectLine("carol: sounds good")
	bob.expectLine("carol: sounds good")

	// Bob's input ends (the end of his pipe, or Ctrl-D): his client half-closes and exits 0 once the
	// server has closed too.
	bob.stdin.Close()
	alice.expectLine("* bob left")
	carol.expectLine("* bob left")
	bobErr := bob.expectExit(0)

	// Carol types /quit.
	carol.send("/quit\n")
	carol.expectLine("* bye")
	alice.expectLine("* carol left")
	carolErr := carol.expectExit(0)

	// The server stops (SIGTERM). Alice did not ask to leave: her client says why it ends (B17).
	if err := srv.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	alice.expectLine("* the server is stopping")
	aliceErr := alice.expectExit(1)

	var b strings.Builder
	b.WriteString("# Three real clients (go run ./step04-chat/client) against the real server, stdin a pipe.\n")
	b.WriteString("# \"(typed)\" lines are what went into a client's stdin; the rest is what it printed (stdout, then\n")
	b.WriteString("# stderr at exit), and its exit status. ADDR is the server's address.\n")
	for _, who := range []struct {
		name   string
		p      *proc
		stderr string
	}{{"alice", alice, aliceErr}, {"bob", bob, bobErr}, {"carol", carol, carolErr}} {
		fmt.Fprintf(&b, "\n=== %s's screen\n", who.name)
		for _, l := range who.p.screen {
			b.WriteString(l + "\n")
		}
		b.WriteString(strings.ReplaceAll(who.stderr, srv.Addr, "ADDR"))
		fmt.Fprintf(&b, "(exit status %d)\n", who.p.cmd.ProcessState.ExitCode())
	}
	tracetest.Compare(t, filepath.Join("testdata", "three-clients.screens"), b.String())
}

// B17 against the real server: when the server dies, the client says so at once and exits 1.
func TestB17_ClientExitsWhenTheRealServerDies(t *testing.T) {
	srv := chatServer(t)
	c := startClient(t, srv.Addr)
	c.expectLine("* welcome, guest1; commands: /nick NAME, /who, /msg NAME TEXT, /quit")
	srv.Kill()
	if stderr := c.expectExit(1); !strings.Contains(stderr, "the server closed the connection") &&
		!strings.Contains(stderr, "the server reset the connection") {
		t.Errorf("stderr does not say the server went away:\n%s", stderr)
	}
}
