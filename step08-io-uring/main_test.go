//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) {
	if bin := os.Getenv("STEP08_EXEC_WITHOUT_IO_URING"); bin != "" {
		execWithoutIOURing(bin) // the test binary as a helper: see TestRefusedIOURingSaysSoInOneLine
	}
	tracetest.Main(m)
}

// execWithoutIOURing runs bin, with this process's arguments, under a seccomp filter that refuses
// io_uring_setup with EPERM, as a container's seccomp profile does (Docker's default refuses it). The
// filter is installed on this thread and kept across exec.
func execWithoutIOURing(bin string) {
	runtime.LockOSThread()
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr: the system call number
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_IO_URING_SETUP, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_NO_NEW_PRIVS:", err)
		os.Exit(100)
	}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_SECCOMP:", err)
		os.Exit(100)
	}
	err := unix.Exec(bin, append([]string{bin}, os.Args[1:]...), os.Environ())
	fmt.Fprintln(os.Stderr, "exec:", err)
	os.Exit(100)
}

// Where io_uring is refused (here by a seccomp filter, as in a container), the program says so in one
// line, naming the error and its likely causes, and exits with status 3, before it listens.
func TestRefusedIOURingSaysSoInOneLine(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-echo", "-addr", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "STEP08_EXEC_WITHOUT_IO_URING="+tracetest.Binary(t, "."))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("exit: %v, stderr %q: want exit status 3", err, stderr.String())
	}
	lines := tracing.Lines(stderr.String())
	if len(lines) != 1 || !strings.Contains(lines[0], "io_uring_setup: EPERM") || !strings.Contains(lines[0], "seccomp") {
		t.Fatalf("stderr %q: want one line naming io_uring_setup, EPERM and seccomp", stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q: want nothing (no listener, no trace)", stdout.String())
	}
	t.Log(lines[0])
}

// needRing skips the test, saying why, where this kernel or container gives no io_uring (ENOSYS, or
// EPERM from kernel.io_uring_disabled or a seccomp profile). On a machine where it works, no test skips.
func needRing(t *testing.T) {
	t.Helper()
	r, err := newRing(8, 16)
	if errors.Is(err, errUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	r.free()
}

// The two ways to accept: one multishot request (the default), and one request per client.
var modes = []struct {
	name string
	args []string
}{
	{"multishot", nil},
	{"oneshot", []string{"-nomultishot"}},
}

// step03's echo scenarios, played on step08 -echo. slow-reader is compared only up to c2's last
// answer: what follows depends on when the kernel acknowledges what c1 reads (see step03's tests).
var echoScenarios = []struct{ name, until string }{
	{"seed", ""},
	{"half-close", ""},
	{"queued-chunks", ""},
	{"reset", ""},
	{"shutdown", ""},
	{"slow-reader", "<< c2 \"still there?\\n\"\n"},
}

// echoTranscript plays ../step03-write-queues/scenarios/NAME.txt on the step in pkg with args, and
// returns the transcript up to until (all of it if until is "").
func echoTranscript(t *testing.T, pkg, name, until string, args ...string) string {
	t.Helper()
	res := tracetest.Replay(t, pkg, filepath.Join("..", "step03-write-queues", "scenarios", name+".txt"), args...)
	if until == "" {
		return res.Transcript
	}
	i := strings.Index(res.Transcript, until)
	if i < 0 {
		t.Fatalf("no %q in the transcript:\n%s", until, res.Transcript)
	}
	return res.Transcript[:i+len(until)]
}

// The echo of step03, on io_uring: every scenario of step03 against golden transcripts
// (testdata/echo-NAME.trace). The scenarios' expects check what each client received.
func TestEchoScenarios(t *testing.T) {
	needRing(t)
	for _, sc := range echoScenarios {
		t.Run(sc.name, func(t *testing.T) {
			got := echoTranscript(t, ".", sc.name, sc.until, "-echo")
			tracetest.CompareWithout(t, filepath.Join("testdata", "echo-"+sc.name+".trace"), got, leave(sc.name)...)
		})
	}
}

// step04's room scenarios, played on step08 (the room is its default service).
var roomScenarios = []string{"room", "framing", "slow"}

func roomTranscript(t *testing.T, pkg, name string, args ...string) string {
	t.Helper()
	return tracetest.Replay(t, pkg, filepath.Join("..", "step04-chat", "scenarios", name+".txt"), args...).Transcript
}

// The chat room of step04, on io_uring: every scenario of step04 against golden transcripts
// (testdata/room-NAME.trace).
func TestRoomScenarios(t *testing.T) {
	needRing(t)
	for _, name := range roomScenarios {
		t.Run(name, func(t *testing.T) {
			tracetest.CompareServerLines(t, filepath.Join("testdata", "room-"+name+".trace"), roomTranscript(t, ".", name))
		})
	}
}

// epollLines are step05's loop lines; ringLines are this step's: the requests it submits, its wait,
// and the completions. Where no socket fills up, nothing else changes from step05 to step08.
var (
	epollLines = regexp.MustCompile(`^(epoll_wait|epoll_ctl|ready) `)
	ringLines  = regexp.MustCompile(`^(submit|enter|complete) `)
)

// Where a socket fills up, the sends are cut differently, and that is the lesson too. step05 writes
// until the kernel says EAGAIN, and a write takes all that is queued at that moment. step08 has one
// send in flight, of what was queued when it was submitted: bytes queued meanwhile wait for its
// completion, and a short send's rest is a new send (write lines, unqueue lines and their EAGAIN).
// And when a client with a send stuck in flight resets, that send may complete with ECONNRESET
// before the recv does: step05 hears it from read, step08 from write. In those scenarios the
// comparison leaves these lines out; everything else (accepts, reads, queues, pauses, drops, closes)
// is the same, and the scenarios' expects check every byte each client receives.
var (
	socketFills = map[string]bool{"queued-chunks": true, "reset": true, "shutdown": true, "slow-reader": true, "slow": true}
	sendLines   = regexp.MustCompile(`^((write|unqueue) |(read|write) +\S+ error ECONNRESET$)`)
)

// loopLines returns what to leave out of step05's and step08's transcripts of scenario name.
func loopLines(name string) (epoll, uring []*regexp.Regexp) {
	if socketFills[name] {
		return []*regexp.Regexp{epollLines, sendLines}, []*regexp.Regexp{ringLines, sendLines}
	}
	return []*regexp.Regexp{epollLines}, []*regexp.Regexp{ringLines}
}

// The instructor's diff, checked in both accept modes: on every echo scenario, step05's transcript
// and step08's differ only in the loop's own lines. Every accept, read, queue, write and close is the
// same, for the same action. The seed's diff is kept for the lesson.
func TestEchoDiffFromStep05IsOnlyTheLoop(t *testing.T) {
	needRing(t)
	for _, sc := range echoScenarios {
		for _, m := range modes {
			t.Run(sc.name+"-"+m.name, func(t *testing.T) {
				epoll := echoTranscript(t, "../step05-epoll", sc.name, sc.until, "-echo")
				uring := echoTranscript(t, ".", sc.name, sc.until, append([]string{"-echo"}, m.args...)...)
				if !strings.Contains(uring, "complete   recv c1 ") {
					t.Fatal("step08's transcript has no recv completion: is it still on io_uring?")
				}
				leaveEpoll, leaveUring := loopLines(sc.name)
				tracetest.SameReactions(t, "step05 -> step08 changes more than the loop's lines", epoll, uring, leaveEpoll, leaveUring)
				if sc.name == "seed" && m.name == "multishot" {
					// The diff the lesson quotes, without the << lines (see tracetest.Received).
					tracetest.StoreDiff(t, "echo-seed-vs-step05.diff", epoll, uring, epollLines, ringLines)
				}
			})
		}
	}
}

// The same for the room, in both accept modes.
func TestRoomDiffFromStep05IsOnlyTheLoop(t *testing.T) {
	needRing(t)
	for _, name := range roomScenarios {
		for _, m := range modes {
			t.Run(name+"-"+m.name, func(t *testing.T) {
				epoll := roomTranscript(t, "../step05-epoll", name)
				uring := roomTranscript(t, ".", name, m.args...)
				leaveEpoll, leaveUring := loopLines(name)
				tracetest.SameReactions(t, "step05 -> step08 changes more than the loop's lines", epoll, uring, leaveEpoll, leaveUring)
			})
		}
	}
}

// The lesson's code diff, kept in testdata/step05-to-step08.diff and checked against both programs,
// so that the page cannot show a stale diff: after a change to either main.go, go test -update
// rewrites it.
func TestCodeDiffFromStep05(t *testing.T) {
	tracetest.CodeDiff(t, "step05-epoll", "step08-io-uring", "step05-to-step08.diff")
}

// SIGTERM: the server stops accepting and reading, tells the room, sends what is queued, closes every
// member and exits 0 (as step05 does), in both accept modes.
func TestStopTellsTheRoom(t *testing.T) {
	needRing(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := tracetest.Open(t, ".", m.args...)
			tracetest.Do(t, s, fmt.Sprintf(`
connect c1
expect-line c1 %q
connect c2
expect-line c2 %q
expect-line c1 "* guest2 joined"
signal TERM
expect-line c1 "* the server is stopping"
expect-line c2 "* the server is stopping"
expect-eof c1
expect-eof c2
close c1
close c2
expect-exit 0
`, fmt.Sprintf(welcome, "guest1"), fmt.Sprintf(welcome, "guest2")))
			if m.name == "multishot" {
				tracetest.Compare(t, filepath.Join("testdata", "room-stop.trace"), s.Transcript())
			}
		})
	}
}

const welcome = "* welcome, %s; commands: /nick NAME, /who, /msg NAME TEXT, /quit"

// A member put out for being too slow is closed by the server while the server has a recv and a send
// in flight for it. The loop cancels both, and submits the close only once both have completed: a
// close while the kernel still held them would leave the socket open (TestCloseDoesNotEndARecv).
// Afterwards the server holds three sockets: the listener, c1 and c3.
func TestCloseCancelsFirst(t *testing.T) {
	needRing(t)
	sc, err := os.ReadFile(filepath.Join("..", "step04-chat", "scenarios", "slow.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s := tracetest.Open(t, ".", "-sndbuf", "4096", "-maxqueue", "16384")
	tracetest.Do(t, s, strings.Replace(string(sc), "args -sndbuf 4096 -maxqueue 16384\n", "", 1))
	var c2 []string
	for _, l := range tracing.Lines(s.Transcript()) {
		if f := strings.Fields(l); f[0] != "<<" && slices.Contains(f[1:min(len(f), 4)], "c2") {
			c2 = append(c2, l)
		}
	}
	want := regexp.MustCompile(`(?s)close +c2 \(too slow\)\nsubmit +cancel recv c2\nsubmit +cancel send c2\n(complete +(recv|send) c2 ECANCELED\n){2}submit +close c2\ncomplete +close c2 0\n$`)
	if got := strings.Join(c2, "\n") + "\n"; !want.MatchString(got) {
		t.Fatalf("c2's last lines: want its close line, the cancels, both completions, then the close:\n%s", got)
	}
	// The lesson quotes them, from the close line on.
	tracetest.Compare(t, filepath.Join("testdata", "close-cancels.trace"), strings.Join(c2[slices.Index(c2, "close      c2 (too slow)"):], "\n")+"\n")
	if n := tracetest.Sockets(t, s.Server()); n != 3 {
		t.Errorf("the server holds %d sockets, want 3 (the listener, c1, c3)", n)
	}
}

// Why the loop cancels before it closes, shown on a ring of the test's own: a read in flight holds
// the socket, so closing the fd sends no FIN, and the peer goes on waiting (checked for 200 ms);
// cancelling the read completes it with ECANCELED and lets the socket go, and the peer sees EOF.
func TestCloseDoesNotEndARecv(t *testing.T) {
	needRing(t)
	runtime.LockOSThread() // the ring is IORING_SETUP_SINGLE_ISSUER
	defer runtime.UnlockOSThread()
	r, err := newRing(8, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer r.free()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[1])
	buf := make([]byte, 16)
	if err := r.read(pair[0], buf, userData(1, opRecv)); err != nil {
		t.Fatal(err)
	}
	if err := r.enter(0); err != nil {
		t.Fatal(err)
	}
	unix.Close(pair[0])
	peer := []unix.PollFd{{Fd: int32(pair[1]), Events: unix.POLLIN}}
	if n, _ := unix.Poll(peer, 200); n != 0 {
		t.Fatalf("the peer saw %#x after a close with a read in flight: the close alone ended it", peer[0].Revents)
	}
	if err := r.cancel(userData(1, opRecv), userData(1, opCancel)); err != nil {
		t.Fatal(err)
	}
	if err := r.enter(1); err != nil {
		t.Fatal(err)
	}
	var results []int32
	r.reap(func(cqe io_uring_cqe) { results = append(results, cqe.res) })
	if len(results) != 1 || results[0] != -int32(unix.ECANCELED) {
		t.Fatalf("completions %v, want the read's alone, with -ECANCELED (%d)", results, -int32(unix.ECANCELED))
	}
	if n, err := unix.Poll(peer, 5000); n != 1 || err != nil {
		t.Fatalf("the peer saw nothing in 5 s after the cancel (%v)", err)
	}
	if n, err := unix.Read(pair[1], buf); n != 0 || err != nil {
		t.Fatalf("the peer read %d, %v: want EOF", n, err)
	}
}

// B19 stays gone: 1100 clients connect and stay; the server holds fds past 1023, and every client is
// served, twice, in both accept modes.
func TestB19_MoreThan1024ClientsAllServed(t *testing.T) {
	needRing(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			const clients = 1100
			s := tracetest.Open(t, ".", append([]string{"-echo"}, m.args...)...)
			conns := tracetest.DialMany(t, s.Server().Addr, clients)
			top := maxFD(t, s.Server().Pid())
			if top < 1024 {
				t.Fatalf("the server's highest fd is %d: the test proves nothing about FD_SETSIZE", top)
			}
			for i, c := range conns { // everyone again, all connected at once
				if err := tracetest.RoundTrip(c, fmt.Sprintf("again %d\n", i)); err != nil {
					t.Fatalf("client %d: %v", i+1, err)
				}
			}
		})
	}
}

// maxFD returns the highest fd process pid has open.
func maxFD(t *testing.T, pid int) int {
	t.Helper()
	top := -1
	for fd := range tracetest.OpenFDs(t, pid) {
		top = max(top, fd)
	}
	return top
}

// openOutOfFDs starts the step with RLIMIT_NOFILE as low as leaves room for one client, c1, and no
// more. step05's tests lower the limit of a running server (prlimit(2)); that would prove nothing
// here: an accept request keeps the limit it was submitted under (the kernel reads it when it
// prepares the request), and a multishot accept is submitted once, at the start. So the limit is
// there from the start, as in production: a first run plays first (c1 connects) and finds the lowest
// fd left free, and the server is started again under prlimit(1) with that as its limit.
func openOutOfFDs(t *testing.T, first string, args ...string) *replay.Session {
	t.Helper()
	probe := tracetest.Open(t, ".", args...)
	tracetest.Do(t, probe, first)
	fds := tracetest.OpenFDs(t, probe.Server().Pid())
	limit := 0 // the lowest fd not in use, as tracetest.LimitFDs finds it: the next client's
	for fds[limit] != "" {
		limit++
	}
	probe.Close()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("prlimit(1) (util-linux) is needed to start the server with few fds:", err)
	}
	wrapper := filepath.Join(t.TempDir(), "step08-io-uring")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --nofile=%d:%d %s \"$@\"\n", prlimit, limit, limit, tracetest.Binary(t, "."))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := replay.Open(wrapper, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// EMFILE, in both accept modes: the server has fds for one client. c2's accept completes with
// EMFILE (a multishot accept ends there): the loop takes c2 with the spare fd, tells it why, closes
// it, and submits a new accept. It does not spin (the replayer sees it asleep after each action); c1
// is still served; and once c1 leaves, its fd serves the next client.
func TestEMFILE_RefusedClearlyNoSpinServiceResumes(t *testing.T) {
	needRing(t)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			args := append([]string{"-echo"}, m.args...)
			first := "connect c1\nsend c1 \"hello\\n\"\nexpect c1 \"hello\\n\""
			s := openOutOfFDs(t, first, args...)
			srv := s.Server()
			tracetest.Do(t, s, first)
			baseline := srv.OpenFDs()
			cpu := srv.CPUTime()
			tracetest.Do(t, s, `connect c2
expect-line c2 "server busy: out of file descriptors, try again later"
expect-eof c2
send c1 "still here\n"
expect c1 "still here\n"
close c1
connect c3
send c3 "my turn\n"
expect c3 "my turn\n"`)
			if m.name == "multishot" {
				tracetest.CompareServerLines(t, filepath.Join("testdata", "emfile.trace"), s.Transcript())
			}
			if got := srv.OpenFDs(); got != baseline {
				t.Errorf("the server holds %d fds, want %d as before (c3 in c1's place, the spare back)", got, baseline)
			}

			// Twenty clients at once, while the fds are out: each is refused, with one accept
			// completion each at most, and the loop goes back to sleep.
			from := srv.Lines()
			const rush = 20
			var rushed []*replay.Client
			for i := range rush {
				c, err := replay.Dial(fmt.Sprintf("r%d", i), srv.Addr, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				rushed = append(rushed, c)
			}
			for i, c := range rushed {
				if line, err := c.ReadLine(10 * time.Second); err != nil || !strings.HasPrefix(line, "server busy") {
					t.Fatalf("rushing client %d got %q, %v", i, line, err)
				}
			}
			if err := srv.Settle(from, true, replay.SettleWithin); err != nil {
				t.Fatal(err)
			}
			after := strings.Join(tracing.Lines(srv.Trace())[from:], "\n")
			if refused := strings.Count(after, "(refused: out of fds)"); refused != rush {
				t.Errorf("%d refusals in the trace, want %d", refused, rush)
			}
			if completions := strings.Count(after, "complete   accept listener"); completions > rush {
				t.Errorf("%d accept completions to refuse %d clients", completions, rush)
			}
			if used := srv.CPUTime() - cpu; used > 500*time.Millisecond {
				t.Errorf("the server used %v of CPU while out of fds: it spins", used)
			}
		})
	}
}

// The room, out of fds, refuses a newcomer with a notice in the room's style; the member already there
// is still served.
func TestEMFILE_RoomRefusesWithANotice(t *testing.T) {
	needRing(t)
	first := "connect c1\nexpect-line c1 \"" + fmt.Sprintf(welcome, "guest1") + "\""
	s := openOutOfFDs(t, first)
	tracetest.Do(t, s, first+`
connect c2
expect-line c2 "* the room is full: the server is out of file descriptors, try again later"
expect-eof c2
send c1 "/who\n"
expect-line c1 "* in the room: guest1"`)
}

// The server holds one io_uring fd, besides the runtime's epoll fd, which must exist before the fds
// can run out (see openRuntimePoller); and no epoll of its own.
func TestOneRingNoEpollOfItsOwn(t *testing.T) {
	needRing(t)
	s := tracetest.Open(t, ".", "-echo")
	rings, polls := 0, 0
	for _, what := range tracetest.OpenFDs(t, s.Server().Pid()) {
		switch what {
		case "anon_inode:[io_uring]":
			rings++
		case "anon_inode:[eventpoll]":
			polls++
		}
	}
	if rings != 1 || polls != 1 {
		t.Fatalf("the server has %d io_uring fds and %d epoll fds, want 1 and 1 (the runtime's)", rings, polls)
	}
}

// Bad flags get one clear line and exit status 2.
func TestFlagsAreChecked(t *testing.T) {
	out, err := exec.Command(tracetest.Binary(t, "."), "-highwater", "1000", "-lowwater", "2000").CombinedOutput()
	if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 || !strings.Contains(string(out), "-lowwater") {
		t.Fatalf("%v, %q: want exit status 2 and a line about -lowwater", err, out)
	}
}

// The demo's scenarios are step05's (themselves step04's and step03's), kept as copies because
// go:embed cannot reach ../. They must not drift.
func TestScenarioCopies(t *testing.T) {
	tracetest.CheckScenarioCopies(t, map[string]string{
		"scenarios/room.txt":      "../step05-epoll/scenarios/room.txt",
		"scenarios/echo-seed.txt": "../step05-epoll/scenarios/echo-seed.txt",
	})
}

// While stopping, a client that resets is ended, and the loop does not spin for the rest of the grace.
func TestStopWhileAClientHangsUpDoesNotSpin(t *testing.T) {
	needRing(t)
	s := tracetest.Open(t, ".", "-echo", "-sndbuf", "4096")
	srv := s.Server()
	tracetest.Do(t, s, `connect c1 rcvbuf=4096
connect c2
send c1 20000 bytes
send c2 "still here\n"
expect c2 "still here\n"
signal TERM`)
	cpu := srv.CPUTime()
	tracetest.Do(t, s, "reset c2")
	if !regexp.MustCompile(`(?m)^close +c2 \(shutdown\)$`).MatchString(s.Transcript()) {
		t.Fatalf("c2's reset during the grace was not handled:\n%s", s.Transcript())
	}
	tracetest.Do(t, s, "expect-exit 0")
	if used := srv.CPUTime() - cpu; used > shutdownGrace/2 {
		t.Errorf("the server used %v of CPU in a %v grace: it spins", used, shutdownGrace)
	}
}

// leave returns what to leave out when comparing scenario name's transcript with its golden one: the
// << lines (the scenario's expects have checked them), and in the shutdown scenario, where c1 never
// reads, the turns spent writing to c1, which TCP's timing cuts up as it likes.
func leave(name string) []*regexp.Regexp {
	if name == "shutdown" {
		return []*regexp.Regexp{tracetest.Received, slowReaderTurns}
	}
	return []*regexp.Regexp{tracetest.Received}
}

// slowReaderTurns is tracetest.SlowReaderWrites for this loop's lines: the sends to c1, their
// completions and the waits between them.
var slowReaderTurns = regexp.MustCompile(`^((write|unqueue|drop) +c1 |(submit|complete) +send c1 |enter )`)

// The handlers are step05's, and so are the rest of its files: only the loop (main.go, requests.go,
// ring.go, completions.go) is new. The copies may differ from step05's only in the lines listed here.
func TestCopiesDifferOnlyInListedLines(t *testing.T) {
	recv := map[string]string{
		"n, err := unix.Read(c.fd, buf)": "the kernel did the recv: the handler takes its result",
		"n, err := c.recvResult(buf)":    "the kernel did the recv: the handler takes its result",
	}
	tracetest.CheckCopies(t, []tracetest.Copy{
		{Original: "../step05-epoll/conn.go", Copy: "conn.go", Allowed: map[string]string{
			"// they want next for the client; only the loop acts on them: it watches the socket for reading while":   "what the loop does for the wants: requests, not an interest list",
			"// wantRead, for writing while wantWrite, and closes it once wantClose.":                                 "what the loop does for the wants",
			"// they want next for the client; only the loop acts on them: it keeps a recv in flight while wantRead,": "what the loop does for the wants",
			"// a send of the queue while wantWrite, and closes the socket once wantClose.":                           "what the loop does for the wants",
			"id uint64 // never reused, unlike fd: a late completion for a closed client finds no one":                "user_data carries a client id that is never reused",
			"sending []byte // the bytes of the send in flight (at most one), kept reachable until it completes":      "at most one send in flight; its bytes must stay put",
			"res int32 // the result of the request whose completion the handler is about to take":                    "the handler takes the completed result (completions.go)",
			"got op // which request that was":                                                           "the handler takes the completed result",
			"recving bool // a recv is in flight (at most one)":                                          "at most one recv in flight",
			"closing bool // its requests are being cancelled; the close comes once they have completed": "cancel before close",
			"starved bool // its recv found no buffer: see requests.starve":                              "a recv that found no buffer is asked again at the end of the turn",
			"": "blank line before the loop's fields",
		}},
		{Original: "../step05-epoll/echo.go", Copy: "echo.go", Allowed: map[string]string{
			"n, err := unix.Read(c.fd, buf)":             recv["n, err := c.recvResult(buf)"],
			"n, err := c.recvResult(buf)":                recv["n, err := c.recvResult(buf)"],
			"n, err := unix.Write(c.fd, c.out[c.sent:])": "the kernel did the send: the handler takes its result",
			"spare []byte // the buffer of the last queue that emptied: the next queue starts in it":      "many queues wait for completions at once: spare buffers, not one (see maxSpares)",
			"spare [][]byte // buffers of queues that emptied: the next queues start in them (see write)": "spare buffers, not one",
			"if c.out == nil {": "spare buffers, not one",
			"c.out, e.spare = e.spare, nil // no new buffer, and so no garbage, for each echo":                     "spare buffers, not one",
			"if c.out == nil && len(e.spare) > 0 {":                                                                "spare buffers, not one",
			"c.out, e.spare = e.spare[len(e.spare)-1], e.spare[:len(e.spare)-1] // no new buffer, no garbage":      "spare buffers, not one",
			"e.spare, c.out, c.sent, c.wantWrite = c.out[:0], nil, 0, false":                                       "spare buffers, not one",
			"if len(e.spare) < maxSpares && cap(c.out) <= maxSpare {":                                              "spare buffers, not one",
			"e.spare = append(e.spare, c.out[:0])":                                                                 "spare buffers, not one",
			"c.out, c.sent, c.wantWrite = nil, 0, false":                                                           "spare buffers, not one",
			"// An idle client holds no buffer; the echo keeps one for the next queue. Most echoes are":            "spare buffers, not one",
			"// written in the turn that queued them, so one buffer serves them all: 4 KiB echoes made":            "spare buffers, not one",
			"// 4 KiB of garbage each without it (see docs/performance.md).":                                       "spare buffers, not one",
			"// An idle client holds no buffer; the echo keeps it for a next queue (see maxSpares).":               "spare buffers, not one",
			"// The echo keeps up to maxSpares spare buffers of at most maxSpare bytes (16 MiB in all, at most).":  "spare buffers, not one",
			"// step05 wrote most echoes in the turn that queued them, so one spare served them all; here every":   "spare buffers, not one",
			"// queue waits for its send's completion, and as many are in flight as clients are echoing: with one": "spare buffers, not one",
			"// spare, each 4 KiB echo was 4 KiB of garbage (go run ./bench -workloads echo -cpuprofile DIR: 115%": "spare buffers, not one",
			"// of step05's CPU per message at 64 connections, growslice and the collector in the profile).":       "spare buffers, not one",
			"const maxSpares, maxSpare = 1024, 16 << 10":                                                           "spare buffers, not one",
			"n, err := c.sendResult(c.out[c.sent:])":                                                               "the kernel did the send: the handler takes its result",
			"if c.sending == nil { // the kernel reads out[sent:] until the send completes: move nothing under it": "a buffer must stay put until its send completes",
			"c.out = append(c.out[:0], c.out[c.sent:]...)":                                                         "moved inside that if",
			"c.sent = 0": "moved inside that if",
			"}":          "the end of that if",
			"// next is what the loop sends c: its queue from the cursor on.": "the loop submits the send, so it asks for the bytes",
			"func (e *echo) next(c *conn) []byte { return c.out[c.sent:] }":   "the loop submits the send",
			"": "blank line before next",
		}},
		{Original: "../step05-epoll/room.go", Copy: "room.go", Allowed: map[string]string{
			"n, err := unix.Read(c.fd, buf)":         recv["n, err := c.recvResult(buf)"],
			"n, err := c.recvResult(buf)":            recv["n, err := c.recvResult(buf)"],
			"n, err := unix.Write(c.fd, rm.next(c))": "the kernel did the send: the handler takes its result (next still passes the skips at the cursor)",
			"n, err := c.sendResult(rm.next(c))":     "the kernel did the send: the handler takes its result",
		}},
		{Original: "../step05-epoll/signals.go", Copy: "signals.go", Allowed: recv},
		{Original: "../step05-epoll/protocol.go", Copy: "protocol.go"},
		{Original: "../step05-epoll/accept.go", Copy: "accept.go", Allowed: map[string]string{
			"func accept(ln int, spare *int, sndbuf int, tr *tracing.Recorder) (c *conn, more bool) {":                    "the kernel did the accept: accept serves its result",
			"func accept(fd int, err error, ln int, spare *int, sndbuf int, tr *tracing.Recorder) (c *conn, more bool) {": "the kernel did the accept",
			"fd, err := accept4(ln)": "the kernel did the accept",
		}},
	})
}

// The lesson's two sequence diagrams, readiness and completion, drawn from one echo of the seed
// scenario ("123\n" from c1) on step05 and on step08: the loop's calls to the kernel are arrows, what
// it does in its own memory notes. Kept in testdata/*.mmd, which docs/08-io-uring.md includes.
func TestSequenceDiagrams(t *testing.T) {
	needRing(t)
	for name, pkg := range map[string]string{"readiness": "../step05-epoll", "completion": "."} {
		got := echoTranscript(t, pkg, "seed", "<< c1 \"123\\n\"\n", "-echo")
		lines := tracing.Lines(got)
		from := slices.Index(lines, ">> c1 send \"123\\n\"") - 1 // the wait before it
		tracetest.Compare(t, filepath.Join("testdata", name+".mmd"), loopDiagram(lines[from:], pkg == "."))
	}
}

// loopDiagram draws transcript lines as the client, the loop and the kernel exchange them. On a
// completion loop, the handlers' read and write lines are no system calls: they take a result.
func loopDiagram(lines []string, completion bool) string {
	var b strings.Builder
	b.WriteString("sequenceDiagram\n    participant c1 as client c1\n    participant loop as the loop (user space)\n    participant kernel\n")
	arrow := func(format string, args ...any) { fmt.Fprintf(&b, "    "+format+"\n", args...) }
	for _, l := range lines {
		verb, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch verb {
		case ">>":
			arrow("c1->>kernel: %s", strings.TrimPrefix(rest, "c1 "))
		case "<<":
			arrow("kernel-->>c1: %s", strings.TrimPrefix(rest, "c1 "))
		case "epoll_wait":
			arrow("loop->>kernel: epoll_wait (%s)", rest)
		case "ready":
			arrow("kernel-->>loop: ready %s", rest)
		case "read", "write":
			if completion {
				arrow("Note over loop: %s %s (the handler takes the result)", verb, rest)
				continue
			}
			arrow("loop->>kernel: %s(c1)", verb)
			arrow("kernel-->>loop: %s", strings.TrimPrefix(rest, "c1 "))
		case "enter":
			arrow("loop->>kernel: io_uring_enter (%s)", rest)
		case "complete":
			arrow("kernel-->>loop: complete %s (in the CQ)", rest)
		case "submit":
			arrow("Note over loop: submit %s (in the SQ)", rest)
		case "queue", "unqueue":
			arrow("Note over loop: %s %s", verb, rest)
		}
	}
	return strings.ReplaceAll(b.String(), `"`, "#quot;")
}
