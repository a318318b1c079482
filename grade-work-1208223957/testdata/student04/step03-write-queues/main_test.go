package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/scenario"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// The seed's operation steps: both clients get their echo, and the trace is the golden one.
func TestSeedScenario(t *testing.T) {
	tracetest.Golden(t, "seed")
}

// The lesson of this step, checked: on the seed's steps, step03's transcript differs from step02's
// (leaving out the signal pipe in the read list) only in the lines about the write list (select and ready lines that now name a client under write=,
// and queue/unqueue lines). Every read, write, accept and close is the same. The diff itself is kept
// in testdata/seed-vs-step02.diff for the lesson to quote.
func TestSeedDiffFromStep02IsOnlyTheWriteList(t *testing.T) {
	mine, err := os.ReadFile(filepath.Join("scenarios", "seed.txt"))
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := os.ReadFile(filepath.Join("..", "step02-select-echo", "scenarios", "seed.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if string(mine) != string(theirs) {
		t.Fatal("scenarios/seed.txt is no longer step02's: the two steps would not play the same scenario")
	}
	before := tracetest.Replay(t, "../step02-select-echo", "scenarios/seed.txt").Transcript
	after := tracetest.Replay(t, ".", "scenarios/seed.txt").Transcript
	// step03 also watches its signal pipe (the shutdown lesson, at the end of the page): every select
	// line names it. Leave it out here, so that this diff is the write list's alone.
	if n, m := strings.Count(after, "select "), strings.Count(after, "select     read=[listener signals"); n != m {
		t.Fatalf("%d of %d select lines watch the signal pipe: it must be watched on every turn", m, n)
	}
	after = strings.ReplaceAll(after, "read=[listener signals", "read=[listener")
	script := tracetest.EditScript(tracing.Lines(before), tracing.Lines(after))
	tracetest.Compare(t, filepath.Join("testdata", "seed-vs-step02.diff"), tracetest.Render(script))
	removed, added := tracetest.LineDiff(tracing.Lines(before), tracing.Lines(after))
	if len(added) == 0 {
		t.Fatal("step03 traces the seed exactly as step02 does: the write list does not show")
	}
	lesson := regexp.MustCompile(`^(select|ready) .* write=\[c\d+\]|^(queue|unqueue) +c\d+ `)
	for _, l := range removed {
		t.Errorf("step02's line is gone from step03's trace: %q", l)
	}
	for _, l := range added {
		if !lesson.MatchString(l) {
			t.Errorf("step03 adds a line that is not about the write list: %q", l)
		}
	}
	t.Logf("step02 -> step03 on the seed: %d lines added, all about the write list", len(added))
}

// The lesson's code diff, kept in testdata/step02-to-step03.diff (quoted in docs/03-write-queues.md)
// and checked against both programs, so that the page cannot show a stale diff: after a change to
// either main.go, go test -update rewrites it.
func TestCodeDiffFromStep02(t *testing.T) {
	old, err := os.ReadFile(filepath.Join("..", "step02-select-echo", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	script := tracetest.EditScript(tracing.Lines(string(old)), tracing.Lines(string(cur)))
	diff := tracetest.Unified("step02-select-echo/main.go", "step03-write-queues/main.go", script, 3)
	tracetest.Compare(t, filepath.Join("testdata", "step02-to-step03.diff"), diff)
}

// Half-close with output pending: after c1's FIN the server stops reading c1 but finishes the echo,
// then closes; c1 gets every byte, then EOF (the scenario's expects). The golden trace shows the
// order: read EOF, finish, the last write, close.
func TestHalfCloseGetsTheWholeEcho(t *testing.T) {
	res := tracetest.Golden(t, "half-close")
	lines := serverLines(res.Transcript)
	tail := strings.Join(lines[len(lines)-5:], "\n")
	if !regexp.MustCompile(`write +c1 (\d+) of (\d+) bytes\nunqueue +c1 -\d+ bytes, 0 pending\nclose +c1 \(EOF\)\n`).MatchString(tail + "\n") {
		t.Fatalf("the server did not close c1 right after its last write:\n%s", tail)
	}
}

// B3: a client that does not read stalls nobody and loses nothing. In step02 the write to c1 blocked
// the whole loop (see step02's stall.trace); here c2 is answered twice while c1 reads nothing, which
// the scenario's "expect c2" lines assert: with a blocking write they would time out. c1 then gets all
// 180000 bytes, in order, and the trace shows at least one write that took less than it was given.
func TestB3_SlowReaderStallsNobody(t *testing.T) {
	lines, _ := slowReader(t)
	partial := 0
	for _, l := range lines {
		if w, ok := parseWrite(l); ok && w.client == "c1" && w.n < w.of {
			partial++
		}
	}
	if partial == 0 {
		t.Fatal("no partial write to c1: the scenario no longer shows what a nonblocking write can do")
	}
}

// Backpressure: c1's queue passes the high-water mark, the server stops reading from c1 (c1 leaves
// the read list, not the write list), and reads again once the queue is below the low-water mark.
// What the server holds for c1 never exceeds the high-water mark plus one read.
func TestBackpressureBoundsTheQueue(t *testing.T) {
	const high, low, oneRead = 64 << 10, 16 << 10, 64 << 10
	lines, _ := slowReader(t)
	queue := regexp.MustCompile(`^queue +c1 \+\d+ bytes, (\d+) pending$`)
	paused, resumed, most := false, false, 0
	for i, l := range lines {
		if m := queue.FindStringSubmatch(l); m != nil {
			most = max(most, atoi(m[1]))
		}
		switch {
		case strings.HasPrefix(l, "pause      c1 "):
			paused = true
			if next := lines[i+1]; !strings.HasPrefix(next, "select ") || strings.Contains(listOf(next, "read"), "c1") || !strings.Contains(listOf(next, "write"), "c1") {
				t.Errorf("after pausing c1 the server should watch c1 for writing only: %s", next)
			}
		case strings.HasPrefix(l, "resume     c1 "):
			resumed = true
			var pending int
			fmt.Sscanf(l, "resume     c1 reading: %d pending", &pending)
			if pending >= low {
				t.Errorf("resumed with %d pending, not below the low-water mark %d: %s", pending, low, l)
			}
		case paused && !resumed && strings.HasPrefix(l, "read       c1 "):
			t.Errorf("read from c1 while it was paused: %s", l)
		}
	}
	if !paused || !resumed {
		t.Fatalf("the scenario should pause and resume c1 (paused=%v, resumed=%v)", paused, resumed)
	}
	if most < high || most >= high+oneRead {
		t.Fatalf("c1's queue peaked at %d bytes: want it past the high-water mark %d and below %d", most, high, high+oneRead)
	}
}

// B5: a read appends to the queue the client already has. Here c1 sends "the end\n" while 2656 bytes
// of its previous chunk still wait: the trace shows them queued together (2664 pending), and c1
// receives every byte in order. With the seed's defect (a new queue on every read) the 2656 bytes would
// be thrown away, and c1's "expect 60000 bytes" would find "the end\n" where they should be.
func TestB5_ReadAppendsToTheQueue(t *testing.T) {
	res := tracetest.Golden(t, "queued-chunks")
	if !strings.Contains(res.Transcript, "queue      c1 +8 bytes, 2664 pending\n") {
		t.Fatal("the scenario no longer queues a read behind bytes that are still pending")
	}
}

// B6: the loop writes only to sockets select reported writable. In the slow-reader scenario c1 sits in
// the write list for many turns in which select does not report it (its buffers are full) while c2
// is served. With the seed's defect (writing to the watched list) those turns would show a write to
// c1 (EAGAIN, or bytes the socket could not take) after a ready line that does not name c1.
func TestB6_WritesOnlyToWritable(t *testing.T) {
	_, transcript := slowReader(t)
	skipped := 0
	var asked, got string // the last select's and ready's write lists
	for _, l := range serverLines(transcript) {
		switch {
		case strings.HasPrefix(l, "select "):
			asked = listOf(l, "write")
		case strings.HasPrefix(l, "ready "):
			got = listOf(l, "write")
			if strings.Contains(asked, "c1") && !strings.Contains(got, "c1") {
				skipped++
			}
		case strings.HasPrefix(l, "write "):
			c := strings.Fields(l)[1]
			if !slices.Contains(strings.Fields(got), c) {
				t.Errorf("%q, but select reported only write=[%s] writable", l, got)
			}
		}
	}
	if skipped == 0 {
		t.Fatal("c1 was never watched without being writable: the scenario proves nothing about B6")
	}
}

// B7: one wake writes everything it can, and a client keeps its place in the write list until its
// queue is empty. In the slow-reader scenario c1's queue holds several reads' worth (92656 bytes) when
// c1 starts reading; the server drains it over several wakes, in order, and every byte c1 sent is
// written back once: the writes to c1 add up to exactly what it sent. With the seed's defect (one
// message per wake, then the queue is deleted and c1 leaves the write list) the sum would fall short
// and c1's "expect 180000 bytes" would time out.
func TestB7_QueueDrainsOverSeveralWakesInOrder(t *testing.T) {
	lines, _ := slowReader(t)
	written, wakes := 0, 0
	for i, l := range lines {
		if w, ok := parseWrite(l); ok && w.client == "c1" {
			written += w.n
			if strings.HasPrefix(lines[i-1], "ready ") {
				wakes++
			}
		}
	}
	if written != 180000 {
		t.Fatalf("the writes to c1 add up to %d bytes; it sent 180000", written)
	}
	if wakes < 3 {
		t.Fatalf("c1's queue drained in %d wakes: the scenario should need several", wakes)
	}
}

// B8: the loop never changes the list it walks. Here one turn has four things to do: c1 has closed, c2
// and c3 have sent a line, and c4 waits to be accepted. (The server is stopped with SIGSTOP while they
// act, so that select reports them all at once.) Closing c1 must not make the loop skip c2: with the
// seed's defect (removing c1 from the list while iterating it), c2's read would move to a later turn
// and the turn below would differ.
func TestB8_OneTurnHandlesEveryReadyClient(t *testing.T) {
	if _, err := os.Stat("/proc/self/task"); err != nil {
		t.Skip("needs /proc to see that the server has stopped")
	}
	s := tracetest.Open(t, ".")
	tracetest.Do(t, s, "connect c1\nconnect c2\nconnect c3")
	srv := s.Server()
	from := srv.Lines()
	if err := unix.Kill(srv.Pid(), unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer unix.Kill(srv.Pid(), unix.SIGCONT)
	if err := srv.WaitStopped(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Client("c1").Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"c2", "c3"} {
		if err := s.Client(c).Send([]byte("from "+c+"\n"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c4, err := replay.Dial("c4", srv.Addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	if err := unix.Kill(srv.Pid(), unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := srv.Settle(from, true, replay.SettleWithin); err != nil {
		t.Fatal(err)
	}
	lines := tracing.Lines(srv.Trace())
	got := strings.Join(lines[from:min(len(lines), from+10)], "\n")
	want := `ready      read=[listener c1 c2 c3] write=[] except=[]
read       c1 EOF
close      c1 (EOF)
read       c2 8 bytes "from c2\n"
queue      c2 +8 bytes, 8 pending
read       c3 8 bytes "from c3\n"
queue      c3 +8 bytes, 8 pending
accept     c4
select     read=[listener signals c2 c3 c4] write=[c2 c3] except=[]
ready      read=[] write=[c2 c3] except=[]`
	if got != want {
		t.Fatalf("the turn after SIGCONT:\n%s\nwant:\n%s", got, want)
	}
	for _, c := range []string{"c2", "c3"} {
		if err := s.Client(c).Expect([]byte("from "+c+"\n"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// B9: a reset drops the client's queue, closes its socket, and takes it out of every list. c1 resets
// while paused (in the write list only: the write fails), c2 while it is in both lists (the read fails,
// and its write is skipped in the same turn). After its close line neither appears again, the server
// holds no more fds than before they came, and c3 is served. With the seed's defect (the socket
// leaves the read list but stays in the write list, unclosed) c1 would still be in write=[...], and
// the fd count would stay up.
func TestB9_ResetDropsTheQueueAndEveryList(t *testing.T) {
	sc, err := scenario.ParseFile(filepath.Join("scenarios", "reset.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s := tracetest.Open(t, ".", sc.Args...)
	baseline := tracetest.Sockets(t, s.Server())
	if err := s.Play(sc); err != nil {
		t.Fatalf("%v\n%s", err, s.Transcript())
	}
	if err := s.Server().Settle(0, false, replay.SettleWithin); err != nil {
		t.Fatal(err)
	}
	transcript := s.Transcript()
	tracetest.Compare(t, filepath.Join("testdata", "reset.trace"), transcript)
	if got := tracetest.Sockets(t, s.Server()); got != baseline+1 { // c3 is still connected
		t.Errorf("with c3 connected the server holds %d sockets, want %d", got, baseline+1)
	}
	lines := serverLines(transcript)
	for _, c := range []string{"c1", "c2"} {
		closed := slices.Index(lines, "close      "+c+" (reset)")
		if closed < 0 {
			t.Fatalf("%s was not closed as reset", c)
		}
		if !strings.HasPrefix(lines[closed-1], "drop       "+c+" ") {
			t.Errorf("%s's queue was not dropped before its close", c)
		}
		for _, l := range lines[closed+1:] {
			if slices.Contains(strings.FieldsFunc(l, func(r rune) bool { return r == ' ' || r == '[' || r == ']' || r == '=' }), c) {
				t.Errorf("%s is named after its close: %s", c, l)
			}
		}
	}
	if strings.Contains(transcript, " fd") {
		t.Error("the trace names an fd nobody owns: something was left behind")
	}
}

// B19, kept from step02: a client whose fd would be 1024 or more cannot be watched by select. It is
// refused with a message and closed, and everyone else is still served. (The socket is nonblocking
// now; the message is short enough to fit in an empty send buffer.)
func TestB19_ClientsPastFDSetSizeAreRefusedOthersServed(t *testing.T) {
	const clients = 1040
	tracetest.RaiseFDLimit(t, 2*clients+64)
	tracetest.RefusedPastFDSetSize(t, tracetest.Open(t, "."), clients)
}

// Bad flags get one clear line and exit status 2.
func TestWatermarkFlagsAreChecked(t *testing.T) {
	out, err := exec.Command(tracetest.Binary(t, "."), "-highwater", "1000", "-lowwater", "2000").CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "-lowwater") {
		t.Fatalf("exit %d, %q: want status 2 and a line about -lowwater", code, out)
	}
}

// slowReader replays scenarios/slow-reader.txt. Up to c1's final read the transcript is the same on
// every run, and is compared with testdata/slow-reader.trace. What the server does while c1 reads
// depends on when the kernel acknowledges what c1 has read (TCP delays some ACKs by up to 40 ms and
// more), so it differs from run to run, and the tests check it by rule. It returns the server's lines
// and the whole transcript.
func slowReader(t *testing.T) ([]string, string) {
	t.Helper()
	res := tracetest.Replay(t, ".", filepath.Join("scenarios", "slow-reader.txt"))
	// The golden part ends before c1 starts reading: how the drain splits into writes depends on when
	// c1's kernel acknowledges (delayed ACKs), which no replay can pin down. The tests check it by rule.
	const last = "<< c2 \"still there?\\n\"\n"
	i := strings.Index(res.Transcript, last)
	if i < 0 {
		t.Fatalf("no %q in the transcript", last)
	}
	tracetest.Compare(t, filepath.Join("testdata", "slow-reader.trace"), res.Transcript[:i+len(last)])
	lines := serverLines(res.Transcript)
	if end := lines[len(lines)-1]; end != "select     read=[listener signals c1 c2] write=[] except=[]" {
		t.Fatalf("after c1 read everything the server should wait with nothing queued, not: %s", end)
	}
	return lines, res.Transcript
}

// serverLines returns the server's trace lines of a transcript, without the clients' >> and << lines.
func serverLines(transcript string) []string {
	var out []string
	for _, l := range tracing.Lines(transcript) {
		if !strings.HasPrefix(l, ">> ") && !strings.HasPrefix(l, "<< ") {
			out = append(out, l)
		}
	}
	return out
}

// listOf returns the names in one list of a select or ready line: listOf(l, "write") is "c1 c2".
func listOf(line, which string) string {
	_, rest, ok := strings.Cut(line, which+"=[")
	if !ok {
		return ""
	}
	names, _, _ := strings.Cut(rest, "]")
	return names
}

type write struct {
	client string
	n, of  int
}

var writeLine = regexp.MustCompile(`^write +(c\d+) (\d+) of (\d+) bytes$`)

// parseWrite reads a line "write  c1 27344 of 30000 bytes".
func parseWrite(line string) (write, bool) {
	m := writeLine.FindStringSubmatch(line)
	if m == nil {
		return write{}, false
	}
	return write{m[1], atoi(m[2]), atoi(m[3])}, true
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func exitCode(err error) int {
	if e, ok := err.(*exec.ExitError); ok {
		return e.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// SIGTERM: the server stops accepting and reading, gives c1 (which does not read) the grace period to
// make room for its queued echo, then drops the rest, closes every client and exits 0 (the scenario
// asserts c2's EOF and the exit status; the golden shows the order).
func TestShutdownOnSIGTERM(t *testing.T) {
	res := tracetest.Replay(t, ".", filepath.Join("scenarios", "shutdown.txt"))
	// c1 never reads: how its echo is cut into writes and turns is TCP's business (SlowReaderWrites).
	tracetest.CompareWithout(t, filepath.Join("testdata", "shutdown.trace"), res.Transcript, tracetest.Received, tracetest.SlowReaderWrites)
	for _, want := range []string{"close      listener (shutdown)", "drop       c1 ", "close      c2 (shutdown)", "<< server exit 0"} {
		if !strings.Contains(res.Transcript, want) {
			t.Errorf("the shutdown transcript has no %q", want)
		}
	}
}

// SIGINT (Ctrl-C) stops the server the same way, and a server with nothing queued exits at once.
func TestShutdownOnSIGINT(t *testing.T) {
	s := tracetest.Open(t, ".")
	tracetest.Do(t, s, "connect c1\nsend c1 \"hi\\n\"\nexpect c1 \"hi\\n\"\nsignal INT\nexpect-eof c1\nexpect-exit 0")
	if !strings.Contains(s.Transcript(), "signal     SIGINT: stop accepting") {
		t.Fatalf("the trace does not name SIGINT:\n%s", s.Transcript())
	}
}

// Out of fds (EMFILE): the client the server cannot hold is told so and closed, instead of being left
// in the backlog, where it would keep the listener readable and select would return at once, forever.
// With that defect this test fails at "connect c3": the server never goes back to sleep. Once an fd is
// free again, the next client is served.
func TestEMFILERefusesWithoutSpinning(t *testing.T) {
	s := tracetest.Open(t, ".")
	srv := s.Server()
	base, nulls := tracetest.Sockets(t, srv), tracetest.CountFDs(t, srv, "/dev/null")
	if err := srv.LimitFDs(2); err != nil { // room for two clients
		t.Skipf("cannot lower the server's RLIMIT_NOFILE: %v", err)
	}
	tracetest.Do(t, s, `
connect c1
send c1 "one\n"
expect c1 "one\n"
connect c2
send c2 "two\n"
expect c2 "two\n"
connect c3
expect-line c3 "server busy: out of file descriptors, try again later"
expect-eof c3`)
	before := srv.CPUTime()
	tracetest.Do(t, s, "expect-nothing c1 300ms")
	if used := srv.CPUTime() - before; used > 100*time.Millisecond {
		t.Fatalf("the server used %v of CPU in 300ms with nothing to do: a busy loop", used)
	}
	tracetest.Do(t, s, `
close c2
connect c4
send c4 "four\n"
expect c4 "four\n"`)
	for _, want := range []string{"accept     listener error EMFILE", "close      c3 (refused: out of fds)"} {
		if !strings.Contains(s.Transcript(), want+"\n") {
			t.Errorf("the trace does not say %q", want)
		}
	}
	if got := tracetest.Sockets(t, srv); got != base+2 {
		t.Errorf("the server holds %d sockets, want %d (its baseline and two clients)", got, base+2)
	}
	if got := tracetest.CountFDs(t, srv, "/dev/null"); got != nulls {
		t.Errorf("the server holds %d fds on /dev/null, want %d as before: the spare, taken again", got, nulls)
	}
}
