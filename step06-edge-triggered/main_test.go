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

// step03's echo scenarios, played on step06 -echo. slow-reader is compared only up to c2's last
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

// The echo of step03, edge-triggered: every scenario of step03 against golden transcripts
// (testdata/echo-NAME.trace). The scenarios' expects check what each client received.
func TestEchoScenarios(t *testing.T) {
	for _, sc := range echoScenarios {
		t.Run(sc.name, func(t *testing.T) {
			got := echoTranscript(t, ".", sc.name, sc.until, "-echo")
			tracetest.CompareWithout(t, filepath.Join("testdata", "echo-"+sc.name+".trace"), got, leave(sc.name)...)
		})
	}
}

// step04's room scenarios, played on step06 (the room is its default service).
var roomScenarios = []string{"room", "framing", "slow"}

func roomTranscript(t *testing.T, pkg, name string, args ...string) string {
	t.Helper()
	return tracetest.Replay(t, pkg, filepath.Join("..", "step04-chat", "scenarios", name+".txt"), args...).Transcript
}

// The chat room of step04, edge-triggered: every scenario of step04 against golden transcripts
// (testdata/room-NAME.trace).
func TestRoomScenarios(t *testing.T) {
	for _, name := range roomScenarios {
		t.Run(name, func(t *testing.T) {
			tracetest.CompareServerLines(t, filepath.Join("testdata", "room-"+name+".trace"), roomTranscript(t, ".", name))
		})
	}
}

// loopLines are the lines of the loop itself: epoll's wait, ready and registration lines. Step06
// changes all of them: every registration carries ET, and the waits come at other moments.
var loopLines = regexp.MustCompile(`^(epoll_wait|epoll_ctl|ready) `)

// etLines are the lines only an edge-triggered loop writes: the read or accept that goes on to EAGAIN
// (a level-triggered loop reads once per turn and waits for epoll to report the rest), and the loop's
// note that it left a client undrained.
var etLines = regexp.MustCompile(`^((read|accept) +\S+ EAGAIN|owed +\S+ .*)$`)

// The instructor's diff, checked: on every echo scenario, step05's transcript (level-triggered) and
// step06's differ only in the loop's own lines (wait, ready, registration) and in what draining adds:
// the reads and accepts that go on to EAGAIN, and owed lines. Every accept, read, queue, write and
// close is the same, for the same action. The seed's diff is kept for the lesson.
func TestEchoDiffFromStep05IsOnlyTheLoop(t *testing.T) {
	for _, sc := range echoScenarios {
		t.Run(sc.name, func(t *testing.T) {
			lt := echoTranscript(t, "../step05-epoll", sc.name, sc.until, "-echo")
			et := echoTranscript(t, ".", sc.name, sc.until, "-echo")
			if !strings.Contains(et, "epoll_ctl  ADD c1 IN|RDHUP|ET\n") {
				t.Fatal("step06's transcript has no edge-triggered registration: is it still edge-triggered?")
			}
			tracetest.SameReactions(t, "step05 -> step06 changes more than the loop's lines and the reads to EAGAIN", lt, et,
				[]*regexp.Regexp{loopLines}, []*regexp.Regexp{loopLines, etLines})
			if sc.name == "seed" {
				// The diff the lesson quotes, without the << lines (see tracetest.Received).
				tracetest.StoreDiff(t, "echo-seed-lt-vs-et.diff", lt, et, loopLines, etLines)
			}
		})
	}
}

// The same for the room: step05's transcripts and step06's differ only in the loop's lines and the
// reads and accepts to EAGAIN.
func TestRoomDiffFromStep05IsOnlyTheLoop(t *testing.T) {
	for _, name := range roomScenarios {
		t.Run(name, func(t *testing.T) {
			lt := roomTranscript(t, "../step05-epoll", name)
			et := roomTranscript(t, ".", name)
			tracetest.SameReactions(t, "step05 -> step06 changes more than the loop's lines and the reads to EAGAIN", lt, et,
				[]*regexp.Regexp{loopLines}, []*regexp.Regexp{loopLines, etLines})
		})
	}
}

// maxChangedLines bounds the lesson's code diff: step06 is step05's loop taught to drain and to be
// fair, not a new program. A change that needs more belongs in its own step.
const maxChangedLines = 150

// The lesson's code diff, kept in testdata/step05-to-step06.diff and checked against both programs,
// so that the page cannot show a stale diff: after a change to either main.go, go test -update
// rewrites it.
func TestCodeDiffFromStep05(t *testing.T) {
	script := tracetest.CodeDiff(t, "step05-epoll", "step06-edge-triggered", "step05-to-step06.diff")
	removed, added := 0, 0
	for _, e := range script {
		switch e.Op {
		case '-':
			removed++
		case '+':
			added++
		}
	}
	changed := removed + added
	if changed > maxChangedLines {
		t.Errorf("main.go changes %d lines from step05's, more than %d", changed, maxChangedLines)
	}
	t.Logf("main.go: %d lines changed from step05's (%d removed, %d added)", changed, removed, added)
}

// SIGTERM: the server stops accepting and reading, tells the room, sends what is queued, closes every
// member and exits 0 (as step04 and step05 do).
func TestStopTellsTheRoom(t *testing.T) {
	s := tracetest.Open(t, ".")
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
	tracetest.Compare(t, filepath.Join("testdata", "room-stop.trace"), s.Transcript())
}

const welcome = "* welcome, %s; commands: /nick NAME, /who, /msg NAME TEXT, /quit"

// B19 stays gone, and edge-triggered the listener's one edge may stand for many clients: 1100 connect
// and stay; the server holds fds past 1023, and every client is served, twice.
func TestB19_MoreThan1024ClientsAllServed(t *testing.T) {
	const clients = 1100
	s := tracetest.Open(t, ".", "-echo")
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

// EMFILE: the server runs out of fds (the test lowers its RLIMIT_NOFILE with prlimit(2) once it is up,
// to the lowest fd number it does not use). A client that connects then cannot be accepted: it gets a
// message and is closed, thanks to the spare fd; the loop does not spin; c1, connected before, is still
// served; and once c1 leaves, its fd serves the next client. Compared with testdata/emfile.trace.
// Edge-triggered, the loop accepts until EAGAIN, so the refusal is followed by one more accept.
func TestEMFILE_RefusedClearlyNoSpinServiceResumes(t *testing.T) {
	s := tracetest.Open(t, ".", "-echo")
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
	tracetest.Compare(t, filepath.Join("testdata", "emfile.trace"), s.Transcript())
	if got := srv.OpenFDs(); got != baseline {
		t.Errorf("the server holds %d fds, want %d as before (c3 in c1's place, the spare back)", got, baseline)
	}

	// Twenty clients at once, while the fds are out: each is refused, with at most one wake-up per
	// client (edge-triggered, one edge may stand for several: the loop accepts until EAGAIN), and the
	// loop goes back to sleep.
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
// clients, and every entry is edge-triggered: besides the listener and the signal pipe, c1 is watched
// for reading only, c2 (whose echo is stuck: it does not read) also for writing, and the clients that
// left are gone from it. The kernel adds ERR and HUP to every entry.
func TestInterestListFollowsTheClients(t *testing.T) {
	s := tracetest.Open(t, ".", "-echo", "-sndbuf", "4096")
	tracetest.Do(t, s, `connect c1
connect c2 rcvbuf=4096
connect c3
connect c4
send c2 30000 bytes
close c3
reset c4`)
	list := tracetest.InterestList(t, s.Server().Pid())
	base := uint32(unix.EPOLLERR | unix.EPOLLHUP | unix.EPOLLET)
	want := []uint32{unix.EPOLLIN, unix.EPOLLIN, unix.EPOLLIN | unix.EPOLLRDHUP, unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLOUT}
	for i := range want {
		want[i] |= base
	}
	if !slices.Equal(list, want) {
		t.Fatalf("interest list (events of listener, signals, c1, c2, by fd) = %v, want %v\n%s", tracetest.EventNames(list), tracetest.EventNames(want), s.Transcript())
	}
}

// Bad flags get one clear line and exit status 2.
func TestFlagsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"-highwater", "1000", "-lowwater", "2000"}, "-lowwater"},
		{[]string{"-readbudget", "-1"}, "-readbudget"},
	} {
		out, err := exec.Command(tracetest.Binary(t, "."), tc.args...).CombinedOutput()
		if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 || !strings.Contains(string(out), tc.says) {
			t.Errorf("%v: %v, %q: want exit status 2 and a line about %s", tc.args, err, out, tc.says)
		}
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

// Everything but the loop is step05's: the handlers, the protocol, the accept, the signal pipe and the
// interest list. The copies may differ from their originals only in the lines listed here: what
// draining needs the handlers to say (drained), and what the interest list learns (ET, owed, fin).
func TestCopiesDifferOnlyInListedLines(t *testing.T) {
	drained := map[string]string{
		"c.drained = true": "EAGAIN: the read found the socket empty, the loop may stop reading",
		"c.drained = n < len(buf) // a short read took all there was: for a stream socket, as good as EAGAIN": "a short read drains it too: the loop stops without one more read for EAGAIN",
	}
	tracetest.CheckCopies(t, []tracetest.Copy{
		{Original: "../step05-epoll/conn.go", Copy: "conn.go", Allowed: map[string]string{
			"drained bool // the last read found the socket empty (EAGAIN, or fewer bytes than it asked for)": "the handlers tell the loop when a read drained the socket",
			"": "blank line before the new field",
		}},
		{Original: "../step05-epoll/echo.go", Copy: "echo.go", Allowed: drained},
		{Original: "../step05-epoll/room.go", Copy: "room.go", Allowed: drained},
		{Original: "../step05-epoll/protocol.go", Copy: "protocol.go"},
		{Original: "../step05-epoll/accept.go", Copy: "accept.go"},
		{Original: "../step05-epoll/signals.go", Copy: "signals.go"},
		{Original: "../step05-epoll/poller.go", Copy: "poller.go", Allowed: map[string]string{
			`"slices"`: "owesRead looks through the owed list",
			"owed []*conn // clients left undrained: read them next turn, with no edge to say so": "the loop's list of clients owed a read",
			"owed bool // in owed": "a client is put on the owed list once",
			"fin bool // an event said the client sent FIN: read to the end, past short reads": "a FIN reported once is remembered",
			"return events":                "interest: every entry edge-triggered",
			"return events | unix.EPOLLET": "interest: every entry edge-triggered",
			"// add puts fd in the interest list, asking for events.":                 "add: edge-triggered",
			"// add puts fd in the interest list, asking for events, edge-triggered.": "add: edge-triggered",
			"events |= unix.EPOLLET": "add: edge-triggered (the listener and the signal pipe too)",
			"// if not, and DEL and close once its handlers are finished with it.":                                    "follow's comment: a MOD re-arms",
			"// if not, and DEL and close once its handlers are finished with it. Edge-triggered, a MOD also":         "follow's comment: a MOD re-arms",
			"// re-arms: if c is ready already, the next wait reports it.":                                            "follow's comment: a MOD re-arms",
			"// owesRead reports whether a client is owed a read it can take now (a paused one waits for its queue).": "owesRead: the loop does not sleep while someone is owed",
			"func (p *poller) owesRead() bool {":                                                                      "owesRead",
			"return !p.stopping && slices.ContainsFunc(p.owed, func(c *conn) bool { return c.wantRead })":             "owesRead",
			"}": "the end of owesRead",
			"":  "blank line before owesRead",
		}},
	})
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
