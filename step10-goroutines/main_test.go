//go:build linux

package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/scenario"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

const welcome = "* welcome, %s; commands: /nick NAME, /who, /msg NAME TEXT, /quit"

// comparePerClient compares a transcript with a golden one the way this step's goroutines allow:
// reaction by reaction (a new one at each ">>" line), and within a reaction each socket's lines in
// order, but not the order across sockets: c2's writer and c3's run at once, and either may trace
// first. The "<<" lines are left out (the scenario's expects have checked them). With -update it
// stores the transcript.
func comparePerClient(t *testing.T, golden, got string) {
	t.Helper()
	if *tracetest.Update {
		tracetest.Compare(t, golden, got)
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	tracetest.SameReactions(t, "the transcript differs from "+golden+", socket by socket", string(want), got, nil, nil)
}

func roomTranscript(t *testing.T, pkg, name string, args ...string) string {
	t.Helper()
	return tracetest.Replay(t, pkg, filepath.Join("..", "step04-chat", "scenarios", name+".txt"), args...).Transcript
}

// step04's room scenarios whose every line, per client, is the same from run to run. (In "slow", how
// much of c1's burst each read takes, and so how c3's writer batches it, depends on timing: see
// TestB13_SlowMemberIsPutOut.)
var roomScenarios = []string{"room", "framing"}

// The chat room of step04, with goroutines: against golden transcripts (testdata/room-NAME.trace),
// client by client.
func TestRoomScenarios(t *testing.T) {
	for _, name := range roomScenarios {
		t.Run(name, func(t *testing.T) {
			comparePerClient(t, filepath.Join("testdata", "room-"+name+".trace"), roomTranscript(t, ".", name))
		})
	}
}

// loopLines are the lines of step05's loop: epoll's wait, ready and registration lines.
var loopLines = regexp.MustCompile(`^(epoll_wait|ready|epoll_ctl) `)

// The loop is in the runtime now: for the same scenario, the lines step05 has and step10 lacks are
// exactly its loop's (wait, ready, registration), and step10 has no line step05 lacks. Every accept,
// read, queue, write, leave and close is the same, for the same action, socket by socket.
func TestLinesStep05HasAndStep10LacksAreTheLoop(t *testing.T) {
	for _, name := range roomScenarios {
		t.Run(name, func(t *testing.T) {
			step05 := roomTranscript(t, "../step05-epoll", name)
			step10 := roomTranscript(t, ".", name)
			for _, kind := range []string{"epoll_wait ", "ready ", "epoll_ctl "} {
				if !regexp.MustCompile(`(?m)^` + kind).MatchString(step05) {
					t.Fatalf("step05's transcript has no %q line: the test would prove nothing", kind)
				}
			}
			if regexp.MustCompile(`(?m)^(epoll_wait|ready|epoll_ctl|select) `).MatchString(step10) {
				t.Fatal("step10's trace has a loop line of its own")
			}
			tracetest.SameReactions(t, "step05 -> step10 changes more than the loop's lines", step05, step10, []*regexp.Regexp{loopLines}, nil)
			if name == "room" {
				// For the lesson: step05's transcript, its loop's lines marked "-". What is left is step10's
				// transcript, socket by socket (checked above), in step05's order: step10's own order
				// across sockets changes from run to run.
				tracetest.StoreDiff(t, "room-vs-step05.diff", step05, tracetest.Without(step05, loopLines), loopLines)
			}
		})
	}
}

// B13: a member who does not read is put out once its socket is full (its writer is parked in
// Write) and the bytes not yet handed to its writer reach the limit; c1 is answered all along, and
// c3, who reads, gets all of the burst that put c2 out (B12). The limit is step04's halved: step04
// counts what the kernel took of a partial write, this step cannot (see putOutSlow), and the scenario
// puts c2 out 30 bytes past step04's limit.
func TestB13_SlowMemberIsPutOut(t *testing.T) {
	res := tracetest.Replay(t, ".", filepath.Join("..", "step04-chat", "scenarios", "slow.txt"), "-maxqueue", "8192")
	lines := tracing.Lines(res.Transcript)
	answered := index(lines, `<< c1 "* in the room: guest1, guest2, guest3\n"`)
	slow := index(lines, "too-slow   c2 socket full and ")
	out := index(lines, "close      c2 (too slow)")
	if !(answered >= 0 && answered < slow && slow < out) {
		t.Fatalf("want c1 answered (line %d), then c2 found too slow (line %d), then put out (line %d):\n%s", answered, slow, out, res.Transcript)
	}
	// c3 was written everything that was queued for it: nothing was dropped, nothing is left.
	queued, written := 0, 0
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[0] == "queue" && f[1] == "c3":
			n, _ := strconv.Atoi(strings.TrimPrefix(f[2], "+"))
			queued += n
		case len(f) >= 3 && f[0] == "write" && f[1] == "c3":
			n, _ := strconv.Atoi(f[2])
			written += n
		}
	}
	if queued < 12800 || written != queued {
		t.Errorf("c3 was queued %d bytes and written %d: want all of c1's burst, all written", queued, written)
	}
}

func index(lines []string, prefix string) int {
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return i
		}
	}
	return -1
}

// SIGTERM: the server stops accepting and reading, tells the room, sends what is queued, closes every
// member gently and exits 0, as step05 does.
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
	comparePerClient(t, filepath.Join("testdata", "room-stop.trace"), s.Transcript())
}

// The echo: the seed's steps against a golden transcript, client by client, and step03's shutdown.
// (step03's other scenarios send a second burst to a client whose echo is not read yet: this echo's
// goroutine is parked in Write then, reading nothing, so the server does not react to the send, and
// the replayer, which waits for a reaction, cannot play them. TestEchoBackpressure plays half-close.)
func TestEchoScenarios(t *testing.T) {
	for _, name := range []string{"seed", "shutdown"} {
		t.Run(name, func(t *testing.T) {
			res := tracetest.Replay(t, ".", filepath.Join("..", "step03-write-queues", "scenarios", name+".txt"), "-echo")
			if name == "seed" {
				comparePerClient(t, filepath.Join("testdata", "echo-seed.trace"), res.Transcript)
			}
		})
	}
}

// A client that sends 60,000 bytes without reading, then half-closes, gets all of them back, then
// EOF. While its socket is full, its goroutine is parked in Write and reads nothing: the bytes it has
// not read wait in the kernel's buffers, and the server holds one 4 KiB buffer for it, whatever it sends.
func TestEchoBackpressure(t *testing.T) {
	s := tracetest.Open(t, ".", "-echo", "-sndbuf", "16384")
	c, err := replay.Dial("c1", s.Server().Addr, 16384)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendPattern(60000, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := c.ExpectPattern(60000, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.ExpectEOF(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// This step shares memory between goroutines: the race detector watches it. The server is built with
// -race, plays the room scenario, then four members chat all at once (each sends 50 lines while the
// others' writers send them on), and it is stopped: a race makes a -race program exit 66, and say so.
func TestRaceDetectorFindsNothingInAChat(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: building with -race takes a while")
	}
	bin := filepath.Join(t.TempDir(), "step10-race")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -race: %v\n%s", err, out)
	}
	sc, err := scenario.ParseFile(filepath.Join("..", "step04-chat", "scenarios", "room.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := replay.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Play(sc); err != nil {
		t.Fatal(s.Failure(err))
	}

	const members, lines = 4, 50
	var conns []*replay.Client
	for i := range members {
		c, err := replay.Dial(fmt.Sprintf("m%d", i), s.Server().Addr, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
		// Its welcome, then one "joined" for each member who joins after it (read below).
		if _, err := c.ReadLine(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range conns[:members-1] {
		for range members - 1 - i {
			if _, err := c.ReadLine(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, members)
	for i, c := range conns {
		wg.Go(func() {
			for j := range lines {
				if err := c.Send(fmt.Appendf(nil, "line %d of m%d\n", j, i), 10*time.Second); err != nil {
					errs <- err
					return
				}
			}
			for range (members - 1) * lines {
				if _, err := c.ReadLine(10 * time.Second); err != nil {
					errs <- fmt.Errorf("%s: %v", c.Name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := s.Do("signal TERM\nexpect-exit 0"); err != nil {
		t.Fatalf("%v\n%s", err, s.Server().Stderr())
	}
	if strings.Contains(s.Server().Stderr(), "DATA RACE") {
		t.Fatalf("the race detector found a race:\n%s", s.Server().Stderr())
	}
}

// Members who leave every way there is (EOF, /quit, reset, put out) give back everything they held:
// their sockets, and their two goroutines, counted in the runtime's own report of its goroutines
// (GODEBUG=scheddetail): once they are gone, the accept loop is the only goroutine parked on a
// socket, and no writer waits for bytes.
func TestLeavingMembersLeaveNothingBehind(t *testing.T) {
	bin := tracetest.Binary(t, ".") // before GODEBUG is set: go build would report on itself
	t.Setenv("GODEBUG", "schedtrace=20,scheddetail=1")
	s, err := replay.Open(bin, "-sndbuf", "4096", "-maxqueue", "8192")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tracetest.Do(t, s, `connect c1
connect c2
connect c3
connect c4 rcvbuf=4096
connect c5
close c1
send c2 "/quit\n"
reset c3
send c5 40000 bytes
close c5`)
	for _, want := range []string{"close      c1 ", "close      c2 (left)", "close      c3 (reset)", "close      c4 (too slow)", "close      c5 "} {
		if !strings.Contains(s.Transcript(), want) {
			t.Fatalf("no %q in the transcript:\n%s", want, s.Transcript())
		}
	}
	if n := tracetest.Sockets(t, s.Server()); n != 1 {
		t.Errorf("the server holds %d sockets, want 1 (the listener)", n)
	}
	if got := parkedGoroutines(t, s.Server()); got["IO wait"] != 1 || got["sync.Cond.Wait"] != 0 {
		t.Errorf("goroutines by what they wait for: %v; want 1 in IO wait (the accept loop) and none in sync.Cond.Wait (a writer)", got)
	}
}

var (
	schedHeading = regexp.MustCompile(`(?m)^SCHED (\d+)ms:`)
	parkedG      = regexp.MustCompile(`(?m)^\s+G\d+: status=4\(([^)]*)\)`) // status 4: waiting
)

// parkedGoroutines returns how many of the server's goroutines are parked, by what they wait for
// ("IO wait": on a socket, through the netpoller), from its next scheduler report.
func parkedGoroutines(t *testing.T, srv *replay.Server) map[string]int {
	t.Helper()
	_, parked := schedReport(t, srv)
	return parked
}

// nextSchedBlock returns the first whole report the runtime writes to the server's stderr after this
// call (GODEBUG=schedtrace=N,scheddetail=1: one every N ms). A report's header says when it was
// written, in ms since the runtime started: the report wanted is the first stamped later than the
// server's age now (from /proc, in 10 ms ticks: hence the margin), not the first one after the last
// this test has seen, which may have been written before the call and still be on its way through the
// pipe. A report is whole once the next one has begun.
func nextSchedBlock(t *testing.T, srv *replay.Server) string {
	t.Helper()
	since := ageMS(t, srv.Pid()) + 20
	deadline := time.Now().Add(10 * time.Second)
	for {
		text := srv.Stderr()
		var fresh []int // where the reports after since begin
		for _, m := range schedHeading.FindAllStringSubmatchIndex(text, -1) {
			if ms, _ := strconv.Atoi(text[m[2]:m[3]]); ms > since {
				fresh = append(fresh, m[0])
			}
		}
		if len(fresh) >= 2 {
			return text[fresh[0]:fresh[1]]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no whole scheduler report on the server's stderr within 10 s (is GODEBUG=schedtrace set?)")
		}
		time.Sleep(5 * time.Millisecond) // the next report is due within 20 ms: a bounded wait for it
	}
}

// ageMS is how long process pid has run, in ms, to the 10 ms of /proc's clock ticks (USER_HZ is 100 on
// Linux): /proc/uptime less the process's start time, field 22 of /proc/PID/stat.
func ageMS(t *testing.T, pid int) int {
	t.Helper()
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Skipf("needs /proc: %v", err)
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	var uptime float64
	fmt.Sscan(string(up), &uptime)
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	start, _ := strconv.Atoi(f[22-3]) // after the name: the state is field 3
	return int(uptime*1000) - start*10
}

// The demo's scenarios are step04's and step03's, kept as copies because go:embed cannot reach ../.
func TestScenarioCopies(t *testing.T) {
	tracetest.CheckScenarioCopies(t, map[string]string{
		"scenarios/room.txt":      "../step04-chat/scenarios/room.txt",
		"scenarios/echo-seed.txt": "../step03-write-queues/scenarios/seed.txt",
	})
}

// The protocol is step04's, line for line: only how the bytes reach it changed.
func TestCopiesDifferOnlyInListedLines(t *testing.T) {
	tracetest.CheckCopies(t, []tracetest.Copy{
		{Original: "../step04-chat/protocol.go", Copy: "protocol.go"},
	})
}

// The room's handlers are step04's, with step04's client c *conn called m *member here (and, in
// handle, its loop's m called o): they may differ only in the lines listed, each with its reason. (hear and
// putOutSlow, which wait, and send, which writes outside the mutex, are this step's own.)
func TestRoomHandlersAreStep04s(t *testing.T) {
	noWants := "no want fields: a goroutine acts on what it wants itself"
	allowed := map[string]map[string]string{
		"handle": nil, "find": nil, "skip": nil, "head": nil,
		"say": {
			"// say queues one line for m alone, as an aside at the log's head. It never writes: it tells the loop": "no loop to tell",
			"// that m wants to be written to.":                                                   "no loop to tell",
			"// say queues one line for m alone, as an aside at the log's head. It never writes.": "no loop to tell",
		},
		"leave": {"m.left, m.wantRead = true, false": noWants, "m.left = true": noWants},
		"broadcast": {
			"if len(rm.log) >= rm.freeAt {": "the log is freed as it grows: there is no end of a turn (see freeLog)",
			"rm.freeLog()":                  "the log is freed as it grows",
			"}":                             "the end of that if",
		},
		"queued": {
			"// queued counts n more bytes due to m, and notes m for putOutSlow when they reach the limit.":     "it wakes the writer",
			"// queued counts n more bytes due to m, wakes m's writer, and notes m for putOutSlow when its due": "it wakes the writer",
			"// bytes reach the limit.": "it wakes the writer",
			"m.wantWrite = true":        noWants,
			"m.changed.Broadcast()":     "it wakes the writer",
		},
		"next": {
			"for len(m.asides) > 0 && m.asides[0].at == m.cursor {": "passing the skips is passSkips, which wrote calls too",
			"if m.asides[0].text != nil {":                          "passSkips",
			"m.cursor += m.asides[0].skip":                          "passSkips",
			"m.asides = m.asides[1:]":                               "passSkips",
			"}":                                                     "passSkips",
			"m.passSkips()":                                         "passSkips",
			"if len(m.asides) > 0 && m.asides[0].at == m.cursor {": "passSkips",
			"return m.asides[0].text[m.sent:]":                     "passSkips: one level less deep",
		},
		"drop": {
			"m.cursor, m.asides, m.due, m.sent, m.unheard = rm.head(), nil, 0, 0, nil": "a paused reader keeps its unheard lines itself",
			"m.cursor, m.asides, m.due, m.sent = rm.head(), nil, 0, 0":                 "a paused reader keeps its unheard lines",
		},
	}
	loopVar, client, conn := regexp.MustCompile(`\bm\b`), regexp.MustCompile(`\bc\b`), regexp.MustCompile(`\*conn\b`)
	for name, lines := range allowed {
		theirs := funcSource(t, "../step04-chat/room.go", name)
		if name == "handle" { // its loop over the members calls each one m, the name of the member here
			theirs = loopVar.ReplaceAllString(theirs, "o")
		}
		theirs = conn.ReplaceAllString(client.ReplaceAllString(theirs, "m"), "*member")
		mine := funcSource(t, "room.go", name)
		for _, l := range tracetest.Unlisted(theirs, mine, lines) {
			t.Errorf("%s differs from step04's in a line not listed: %s", name, l)
		}
	}
}

// funcSource returns the source of the function or method name in the Go file path, with its comment.
func funcSource(t *testing.T, path, name string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, data, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == name {
			start := fd.Pos()
			if fd.Doc != nil {
				start = fd.Doc.Pos()
			}
			return string(data[fset.Position(start).Offset:fset.Position(fd.End()).Offset])
		}
	}
	t.Fatalf("%s has no func %s", path, name)
	return ""
}

// Bad flags get one clear line and exit status 2; so does an address that is not an IP.
func TestFlagsAreChecked(t *testing.T) {
	for _, args := range [][]string{{"-maxqueue", "0"}, {"-addr", "localhost:0"}, {"stray"}} {
		out, err := exec.Command(tracetest.Binary(t, "."), args...).CombinedOutput()
		if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 || !strings.Contains(string(out), "step10-goroutines: ") {
			t.Errorf("%v: %v, %q: want exit status 2 and one line", args, err, out)
		}
	}
}
