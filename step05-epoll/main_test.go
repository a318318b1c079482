//go:build linux

package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// The ways the loop can run: step05 has one, level-triggered (step06's tests add edge-triggered).
var modes = []struct {
	name   string
	args   []string
	suffix string
}{
	{"LT", nil, ""},
}

// step03's echo scenarios, played on step05 -echo. slow-reader is compared only up to c2's last
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

// The echo of step03, on epoll: every scenario of step03 against golden transcripts
// (testdata/echo-NAME.trace). The scenarios' expects check what each client received.
func TestEchoScenarios(t *testing.T) {
	for _, sc := range echoScenarios {
		for _, m := range modes {
			t.Run(sc.name+"-"+m.name, func(t *testing.T) {
				got := echoTranscript(t, ".", sc.name, sc.until, append([]string{"-echo"}, m.args...)...)
				tracetest.CompareWithout(t, filepath.Join("testdata", "echo-"+sc.name+m.suffix+".trace"), got, leave(sc.name)...)
			})
		}
	}
}

// loopLines are the lines of the loop itself, which this step changes: select's wait and ready lines,
// and epoll's wait, ready and registration lines.
var loopLines = regexp.MustCompile(`^(select|ready|epoll_wait|epoll_ctl) `)

// The instructor's diff, checked: on every echo scenario, step03's transcript and step05's differ only
// in the loop's own lines (wait, ready, registration). Every accept, read, queue, write and close is
// the same, for the same action. Edge-triggered, step05 adds only the reads and accepts that go on
// until EAGAIN (accepts, and reads that filled the buffer: see TestET_EveryReadGoesOnUntilDrained).
func TestEchoDiffFromStep03IsOnlyTheLoop(t *testing.T) {
	for _, sc := range echoScenarios {
		t.Run(sc.name, func(t *testing.T) {
			before := echoTranscript(t, "../step03-write-queues", sc.name, sc.until)
			lt := echoTranscript(t, ".", sc.name, sc.until, "-echo")
			if !strings.Contains(lt, "epoll_ctl  ADD c1 IN|RDHUP\n") {
				t.Fatal("step05's transcript has no epoll_ctl line: is it still on epoll?")
			}
			loop := []*regexp.Regexp{loopLines}
			tracetest.SameReactions(t, "step03 -> step05 changes more than the loop's lines", before, lt, loop, loop)
			if sc.name == "seed" {
				// The diff the lesson quotes, without the << lines (see tracetest.Received).
				tracetest.StoreDiff(t, "echo-seed-vs-step03.diff", before, lt, loopLines)
			}
		})
	}
}

// step04's room scenarios, played on step05 (the room is its default service).
var roomScenarios = []string{"room", "framing", "slow"}

func roomTranscript(t *testing.T, pkg, name string, args ...string) string {
	t.Helper()
	return tracetest.Replay(t, pkg, filepath.Join("..", "step04-chat", "scenarios", name+".txt"), args...).Transcript
}

// The chat room of step04, on epoll: every scenario of step04, against
// golden transcripts (testdata/room-NAME.trace).
func TestRoomScenarios(t *testing.T) {
	for _, name := range roomScenarios {
		for _, m := range modes {
			t.Run(name+"-"+m.name, func(t *testing.T) {
				got := roomTranscript(t, ".", name, m.args...)
				tracetest.CompareServerLines(t, filepath.Join("testdata", "room-"+name+m.suffix+".trace"), got)
			})
		}
	}
}

// The instructor's diff for the room: step04's transcript and step05's differ only in the loop's own
// lines. (In one reaction, step04 writes to its members in order of arrival and step05 in the order
// epoll reports them: see reactions.)
func TestRoomDiffFromStep04IsOnlyTheLoop(t *testing.T) {
	for _, name := range roomScenarios {
		t.Run(name, func(t *testing.T) {
			before := roomTranscript(t, "../step04-chat", name)
			lt := roomTranscript(t, ".", name)
			loop := []*regexp.Regexp{loopLines}
			tracetest.SameReactions(t, "step04 -> step05 changes more than the loop's lines", before, lt, loop, loop)
			if name == "room" {
				// For the lesson: the diff as an instructor sees it, in diff -u form, without the << lines.
				script := tracetest.EditScript(tracing.Lines(tracetest.Without(before, tracetest.Received)), tracing.Lines(tracetest.Without(lt, tracetest.Received)))
				diff := tracetest.Unified("step04-chat (select)", "step05-epoll (epoll, level-triggered)", script, 1)
				tracetest.Compare(t, filepath.Join("testdata", "room-vs-step04.diff"), diff)
			}
		})
	}
}

// The lesson's code diff, kept in testdata/step04-to-step05.diff (quoted in docs/05-epoll.md) and
// checked against both programs, so that the page cannot show a stale diff: after a change to either
// main.go, go test -update rewrites it.
func TestCodeDiffFromStep04(t *testing.T) {
	tracetest.CodeDiff(t, "step04-chat", "step05-epoll", "step04-to-step05.diff")
}

// SIGTERM: the server stops accepting and reading, tells the room, sends what is queued, closes every
// member and exits 0 (as step04 does).
func TestStopTellsTheRoom(t *testing.T) {
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
			tracetest.Compare(t, filepath.Join("testdata", "room-stop"+m.suffix+".trace"), s.Transcript())
		})
	}
}

// B19 is gone: select could not watch an fd past 1023, epoll has no such limit. 1100 clients connect
// and stay; the server holds fds past 1023, and every client is served, twice.
func TestB19_MoreThan1024ClientsAllServed(t *testing.T) {
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
			t.Logf("%d clients connected at once, server fds up to %d, all served", clients, top)
		})
	}
}

// 10,000 clients at once (the figure for this kind of machine): slow for -short.
func TestTenThousandClients(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 10,000 connections")
	}
	const clients = 10000
	s := tracetest.Open(t, ".", "-echo")
	start := time.Now()
	conns := tracetest.DialMany(t, s.Server().Addr, clients)
	for i, c := range conns {
		if err := tracetest.RoundTrip(c, fmt.Sprintf("again %d\n", i)); err != nil {
			t.Fatalf("client %d: %v", i+1, err)
		}
	}
	t.Logf("%d clients connected at once, each served twice, in %v; server holds %d fds",
		clients, time.Since(start).Round(time.Millisecond), s.Server().OpenFDs())
}

// maxFD returns the highest fd process pid has open.
func maxFD(t *testing.T, pid int) int {
	t.Helper()
	fds := tracetest.OpenFDs(t, pid)
	top := -1
	for fd := range fds {
		top = max(top, fd)
	}
	return top
}

// EMFILE: the server runs out of fds (the test lowers its RLIMIT_NOFILE with prlimit(2) once it is up,
// to the lowest fd number it does not use). A client that connects then cannot be accepted: it gets a
// message and is closed, thanks to the spare fd; the loop does not spin (the replayer sees it asleep
// after each action, which a busy loop never is); c1, connected before, is still served; and once c1
// leaves, its fd serves the next client. Compared with testdata/emfile.trace.
func TestEMFILE_RefusedClearlyNoSpinServiceResumes(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := tracetest.Open(t, ".", append([]string{"-echo"}, m.args...)...)
			srv := s.Server()
			tracetest.Do(t, s, "connect c1\nsend c1 \"hello\\n\"\nexpect c1 \"hello\\n\"")
			baseline := srv.OpenFDs()
			tracetest.LimitFDs(t, srv)
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
			tracetest.Compare(t, filepath.Join("testdata", "emfile"+m.suffix+".trace"), s.Transcript())
			if got := srv.OpenFDs(); got != baseline {
				t.Errorf("the server holds %d fds, want %d as before (c3 in c1's place, the spare back)", got, baseline)
			}

			// Twenty clients at once, while the fds are out: each is refused, with a bounded number of
			// wake-ups (level-triggered one per client at most, as the listener stays ready while
			// clients wait; edge-triggered fewer), and the loop goes back to sleep.
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
			after := tracing.Lines(srv.Trace())[from:]
			wakes := 0
			for _, l := range after {
				if strings.HasPrefix(l, "epoll_wait ") {
					wakes++
				}
			}
			if refused := strings.Count(strings.Join(after, "\n"), "(refused: out of fds)"); refused != rush {
				t.Errorf("%d refusals in the trace, want %d", refused, rush)
			}
			if wakes > rush {
				t.Errorf("%d wake-ups to refuse %d clients", wakes, rush)
			}
			if used := srv.CPUTime() - cpu; used > 500*time.Millisecond {
				t.Errorf("the server used %v of CPU while out of fds: it spins", used)
			}
			t.Logf("%d clients refused in %d wake-ups; CPU used while out of fds: %v", rush, wakes, srv.CPUTime()-cpu)
		})
	}
}

// The room, out of fds, refuses a newcomer with a notice in the room's style; nobody in the room is
// told (the newcomer never joined), and the member already there is still served.
func TestEMFILE_RoomRefusesWithANotice(t *testing.T) {
	s := tracetest.Open(t, ".")
	tracetest.Do(t, s, "connect c1\nexpect-line c1 \""+fmt.Sprintf(welcome, "guest1")+"\"")
	tracetest.LimitFDs(t, s.Server())
	tracetest.Do(t, s, `connect c2
expect-line c2 "* the room is full: the server is out of file descriptors, try again later"
expect-eof c2
send c1 "/who\n"
expect-line c1 "* in the room: guest1"`)
}

const welcome = "* welcome, %s; commands: /nick NAME, /who, /msg NAME TEXT, /quit"

// The runtime's own poller must exist before the fds can run out (see serve): the server has two
// epoll fds, the runtime's and its own, from the start.
func TestRuntimePollerOpenedAtStart(t *testing.T) {
	s := tracetest.Open(t, ".", "-echo")
	polls := 0
	for _, what := range tracetest.OpenFDs(t, s.Server().Pid()) {
		if what == "anon_inode:[eventpoll]" {
			polls++
		}
	}
	if polls != 2 {
		t.Fatalf("the server has %d epoll fds at start, want 2 (the runtime's and its own)", polls)
	}
}

// The interest list, read from the kernel (/proc/PID/fdinfo of the server's epoll fd), follows the
// clients: besides the listener and the signal pipe, c1 is watched for reading only, c2 (whose echo is stuck: it does not read) also for
// writing, and the clients that left are gone from it. The kernel adds ERR and HUP to every entry.
func TestInterestListFollowsTheClients(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := tracetest.Open(t, ".", append([]string{"-echo", "-sndbuf", "4096"}, m.args...)...)
			tracetest.Do(t, s, `connect c1
connect c2 rcvbuf=4096
connect c3
connect c4
send c2 30000 bytes
close c3
reset c4`)
			list := tracetest.InterestList(t, s.Server().Pid())
			base := uint32(unix.EPOLLERR | unix.EPOLLHUP)
			want := []uint32{unix.EPOLLIN, unix.EPOLLIN, unix.EPOLLIN | unix.EPOLLRDHUP, unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLOUT}
			for i := range want {
				want[i] |= base
			}
			if !slices.Equal(list, want) {
				t.Fatalf("interest list (events of listener, signals, c1, c2, by fd) = %v, want %v\n%s", tracetest.EventNames(list), tracetest.EventNames(want), s.Transcript())
			}
		})
	}
}

// Bad flags get one clear line and exit status 2.
func TestWatermarkFlagsAreChecked(t *testing.T) {
	out, err := exec.Command(tracetest.Binary(t, "."), "-highwater", "1000", "-lowwater", "2000").CombinedOutput()
	if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 || !strings.Contains(string(out), "-lowwater") {
		t.Fatalf("%v, %q: want exit status 2 and a line about -lowwater", err, out)
	}
}

// The demo's scenarios are step04's and step03's, kept as copies because go:embed cannot reach ../.
// They must not drift.
func TestScenarioCopies(t *testing.T) {
	tracetest.CheckScenarioCopies(t, map[string]string{
		"scenarios/room.txt":      "../step04-chat/scenarios/room.txt",
		"scenarios/echo-seed.txt": "../step03-write-queues/scenarios/seed.txt",
	})
}

// The handlers are step04's room and step03's echo, and the rest of the files are step04's: only the
// loop (main.go) is new. The copies may differ from their originals only in the lines listed here.
func TestCopiesDifferOnlyInListedLines(t *testing.T) {
	tracetest.CheckCopies(t, []tracetest.Copy{
		{Original: "../step04-chat/conn.go", Copy: "conn.go"},
		{Original: "../step04-chat/protocol.go", Copy: "protocol.go"},
		{Original: "../step04-chat/signals.go", Copy: "signals.go"},
		{Original: "../step04-chat/room.go", Copy: "room.go", Allowed: map[string]string{
			"woken    []*conn // members whose wants changed outside their own turn: epoll must be told of them": "select rebuilt its lists from every client each turn; epoll must hear whose wants a broadcast changed",
			"if !c.wantWrite {":              "queued: a member that had nothing due wants to be written to now",
			"rm.woken = append(rm.woken, c)": "queued and putOutSlow: tell the loop",
			"}":                              "the end of say's if",
			"// takeWoken returns the members whose wants changed outside their own turn since it was last called.": "the loop takes the woken members",
			"func (rm *room) takeWoken() []*conn {": "the loop takes the woken members",
			"woken := rm.woken":                     "the loop takes the woken members",
			"rm.woken = nil":                        "the loop takes the woken members",
			"return woken":                          "the loop takes the woken members",
			"":                                      "blank lines around the added function",
			// Issue 22: a member noted on every line of a long read was asked hasSpace (a poll) on every
			// line, two thirds of the unpaced chat's CPU; the answer holds until the next write to it.
			"roomy   bool    // its socket had space when putOutSlow asked, and nothing was written to it since": "issue 22: one poll per member per write, not per line",
			"if c.due >= rm.maxQueue {":             "issue 22: a roomy member is not noted again",
			"if c.due >= rm.maxQueue && !c.roomy {": "issue 22: a roomy member is not noted again",
			"c.blocked = false":                     "issue 22: a write forgets the answer",
			"c.blocked, c.roomy = false, false":     "issue 22: a write forgets the answer",
			"if c == heard || c.wantClose || c.due < rm.maxQueue || hasSpace(c.fd) {": "issue 22: hasSpace asked once per write",
			"if c == heard || c.wantClose || c.due < rm.maxQueue || c.roomy {":        "issue 22: hasSpace asked once per write",
			"if hasSpace(c.fd) {": "issue 22: hasSpace asked once per write",
			"// Only a write takes space: until the next one, the answer holds, and a member noted on": "issue 22",
			"// every line of a long read costs one poll, not one per line (issue 22).":                "issue 22",
			"c.roomy = true": "issue 22: the answer kept",
			"continue":       "issue 22: a roomy member is skipped",
		}},
		{Original: "../step03-write-queues/echo.go", Copy: "echo.go", Allowed: map[string]string{
			"// The loop's other handlers have nothing to do for an echo: there is no room to join or to tell.": "step05 serves the room or the echo through one service interface",
			"func (e *echo) join(c *conn)        {}":                                                            "the service interface",
			"func (e *echo) endTurn()            {}":                                                            "the service interface",
			"func (e *echo) stop()               {}":                                                            "the service interface",
			"func (e *echo) takeWoken() []*conn { return nil }":                                                 "the service interface",
			"": "blank line before the added methods",
		}},
		{Original: "../step04-chat/accept.go", Copy: "accept.go", Allowed: map[string]string{
			"// fdSetSize is FD_SETSIZE: an FdSet has one bit for each fd from 0 to 1023 (on Linux and macOS).": "epoll has no FD_SETSIZE (B19 is gone)",
			"const fdSetSize = 1024": "no FD_SETSIZE",
			"if fd >= fdSetSize {":   "no FD_SETSIZE",
			"// FdSet.Set would panic (or, in C, write past the set). Refuse this one client; serve the rest (B19).": "no FD_SETSIZE",
			"// It never joined, so nobody else is told.":                                                            "no FD_SETSIZE",
			"unix.Write(fd, []byte(roomFull))":                                                                       "no FD_SETSIZE",
			"unix.Close(fd)":                                                                                         "no FD_SETSIZE",
			`tr.Close(fd, "refused: fd past FD_SETSIZE")`:                                                            "no FD_SETSIZE",
			"return nil, true":                                                                                       "no FD_SETSIZE",
			"}":                                                                                                      "no FD_SETSIZE",
			"// roomFull is all a client past FD_SETSIZE hears: this server cannot watch its fd.":                     "no FD_SETSIZE",
			`const roomFull = "* the room is full: this server uses select, which cannot watch more than 1024 fds\n"`: "no FD_SETSIZE",
			"fd, _, err := unix.Accept(ln)":                 "accept4: no address, no garbage per client (idle memory 283 -> 134 B)",
			"fd, err := accept4(ln)":                        "accept4",
			"if fd, _, err = unix.Accept(ln); err == nil {": "accept4",
			"if fd, err = accept4(ln); err == nil {":        "accept4",
			"unix.CloseOnExec(fd)":                          "accept4's flags set close-on-exec",
			"unix.SetNonblock(fd, true) // a write takes what fits and returns, instead of stalling the loop (B3)":    "accept4's flags set nonblocking",
			"// accept4 is accept(2) with flags: the new socket is nonblocking (a write takes what fits and returns,": "accept4",
			"// instead of stalling the loop: B3) and close-on-exec from the start. It asks for no address, which":    "accept4",
			"// the trace does not show: unix.Accept's address buffer and the Sockaddr it builds are garbage with":    "accept4",
			"// every client, and a server holding 10,000 idle ones feels it: RSS per idle connection 283 B with":     "accept4",
			"// unix.Accept, 134 B with this (go run ./bench -workloads scan -servers step05, median of 5 windows).":  "accept4",
			"func accept4(ln int) (int, error) {": "accept4",
			"fd, _, errno := unix.Syscall6(unix.SYS_ACCEPT4, uintptr(ln), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)": "accept4",
			"if errno != 0 {":     "accept4",
			"return -1, errno":    "accept4",
			"return int(fd), nil": "accept4",
			"// refusal is what a client hears when the server is out of fds.":                                   "step05 serves the echo too, whose refusal is step03's",
			"// refusal is what a client hears when the server is out of fds (main sets the echo's with -echo).": "step05 serves the echo too",
			`const refusal = "* the room is full: the server is out of file descriptors, try again later\n"`:     "main sets the echo's refusal",
			`var refusal = "* the room is full: the server is out of file descriptors, try again later\n"`:       "main sets the echo's refusal",
			"": "blank lines around what was taken out",
		}},
	})
}

// Issue 20, item 5: while stopping, the loop hears nobody, yet epoll reports a client that resets
// (ERR|HUP) unasked on every wait. With nothing queued for it, no handler was ever called, and the
// level-triggered loop spun for the rest of the grace. Now a stopping server reads a client it has
// sent everything to (the lingering close, signals.go), and the reset ends it: the replayer's settle
// (every server thread asleep after each action) fails on a loop that spins.
func TestStopWhileAClientHangsUpDoesNotSpin(t *testing.T) {
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
		return []*regexp.Regexp{tracetest.Received, tracetest.SlowReaderWrites}
	}
	return []*regexp.Regexp{tracetest.Received}
}
