//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// The demo's scenario: a line deadline and an idle deadline pass, and the member who spoke last stays.
// The whole transcript is compared: the deadlines are far enough apart that it is the same on every
// run, and the wait lines name whose deadline each wait was given.
func TestTimersScenario(t *testing.T) {
	res := tracetest.Replay(t, ".", filepath.Join("scenarios", "timers.txt"))
	tracetest.Compare(t, filepath.Join("testdata", "timers.trace"), res.Transcript)
	// The lesson quotes bob's half line, from his send to the room hearing that he was put out.
	from, to := strings.Index(res.Transcript, `>> c2 send "hello, ro"`), strings.Index(res.Transcript, "leave      c2 bob was put out")
	if from < 0 || to < from {
		t.Fatal("no send of bob's half line, or no leave after it, in the transcript")
	}
	tracetest.Compare(t, filepath.Join("testdata", "timers-line.trace"), res.Transcript[from:to+strings.Index(res.Transcript[to:], "\n")+1])
}

// clockLines are the lines this step changes: the wait names its deadline ("until c1 idle"), and a
// deadline that passes says so.
var clockLines = regexp.MustCompile(`^(epoll_wait|timeout) `)

// until is the part of a wait line that names the wait's deadline.
var until = regexp.MustCompile(` until .*`)

// The instructor's diff, checked: on every echo scenario of step03 and every room scenario of step04,
// step05's transcript and step07's differ only in the clock: the wait lines name a deadline, and the
// shutdown grace, where it runs out, says so. With the default deadlines (minutes) nobody times out.
func TestSameAsStep05ButTheClock(t *testing.T) {
	type play struct{ dir, name string }
	var plays []play
	for _, name := range []string{"seed", "half-close", "queued-chunks", "reset", "shutdown"} {
		plays = append(plays, play{"step03-write-queues", name})
	}
	for _, name := range []string{"room", "framing", "slow"} {
		plays = append(plays, play{"step04-chat", name})
	}
	for _, pl := range plays {
		t.Run(pl.name, func(t *testing.T) {
			file := filepath.Join("..", pl.dir, "scenarios", pl.name+".txt")
			var args []string
			if pl.dir == "step03-write-queues" {
				args = []string{"-echo"}
			}
			before := tracetest.Replay(t, "../step05-epoll", file, args...).Transcript
			after := tracetest.Replay(t, ".", file, args...).Transcript
			if !strings.Contains(after, " until ") {
				t.Fatal("no wait line names a deadline: is the clock still there?")
			}
			// With the deadline's name taken off, every wait line is step05's.
			plain := strings.Join(mapLines(after, func(l string) string {
				if strings.HasPrefix(l, "epoll_wait ") {
					return until.ReplaceAllString(l, "")
				}
				return l
			}), "")
			timeouts := []*regexp.Regexp{regexp.MustCompile(`^timeout    shutdown grace`)}
			tracetest.SameReactions(t, "step05 -> step07 changes more than the clock's lines", before, plain, nil, timeouts)
			if pl.name == "room" {
				tracetest.StoreDiff(t, "room-vs-step05.diff", before, after, clockLines)
			}
		})
	}
}

// mapLines applies f to each line of s (each with its newline).
func mapLines(s string, f func(string) string) []string {
	var out []string
	for _, l := range tracing.Lines(s) {
		out = append(out, f(l)+"\n")
	}
	return out
}

// The lesson's code diff, kept in testdata/step05-to-step07.diff (quoted in docs/07-timers.md) and
// checked against both programs: after a change to either main.go, go test -update rewrites it.
func TestCodeDiffFromStep05(t *testing.T) {
	tracetest.CodeDiff(t, "step05-epoll", "step07-timers", "step05-to-step07.diff")
}

// The clients a line deadline and an idle deadline are for, many at once: slowlorises (each sends the
// start of a line and never its end) and silent clients (each connects and says nothing). Every one
// of them is told and closed within its deadline, and the server gives back every fd, while an honest
// member, who asks for an answer all along, is served throughout. (The fault matrix plays the same
// with 1,000 of each against step05, which keeps them all.)
func TestSlowlorisAndSilentClientsAreFreed(t *testing.T) {
	const each = 150
	lineTimeout, idle := time.Second, 2*time.Second
	srv, err := replay.Start(tracetest.Binary(t, "."), "-trace=false", "-linetimeout", lineTimeout.String(), "-idle", idle.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	before := tracetest.Sockets(t, srv) // the listener
	honest := dial(t, srv.Addr, "honest")
	if _, err := honest.ReadLine(10 * time.Second); err != nil { // its welcome
		t.Fatal(err)
	}
	tracetest.RaiseFDLimit(t, 2*each+64)
	var slow, silent []*replay.Client
	start := time.Now()
	for i := range each {
		c := dial(t, srv.Addr, fmt.Sprintf("slowloris%d", i))
		if err := c.Send([]byte("GET / HTTP/1.1"), 10*time.Second); err != nil { // and never its newline
			t.Fatal(err)
		}
		slow = append(slow, c)
		silent = append(silent, dial(t, srv.Addr, fmt.Sprintf("silent%d", i)))
		if i%50 == 0 {
			ping(t, honest) // so that the honest member is not idle while the others come
		}
	}
	// The honest member sends itself a private line, again and again, until the server holds nothing
	// but it and its listener (or a bound passes); each answer must come (the server is not stuck), and
	// is timed. It speaks all along, so its own idle deadline keeps moving.
	var worst time.Duration
	freed := time.Duration(0)
	for freed == 0 {
		worst = max(worst, ping(t, honest))
		if tracetest.Sockets(t, srv) == before+1 {
			freed = time.Since(start)
		}
		if time.Since(start) > idle+lineTimeout+10*time.Second {
			t.Fatalf("%v after the first client came, the server still holds %d sockets (before: %d)", time.Since(start), tracetest.Sockets(t, srv), before)
		}
	}
	if err := honest.Send([]byte("/who\n"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := readUntil(honest, "* in the room: honest", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for i, c := range slow {
		if _, err := readUntil(c, "* line too slow", 10*time.Second); err != nil {
			t.Fatalf("slowloris %d: %v", i, err)
		}
	}
	for i, c := range silent {
		if _, err := readUntil(c, "* idle too long", 10*time.Second); err != nil {
			t.Fatalf("silent client %d: %v", i, err)
		}
	}
	for i, c := range append(slow, silent...) {
		if err := c.ExpectEOF(10 * time.Second); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	if freed < lineTimeout {
		t.Errorf("every client was closed %v after they came, before the line deadline (%v)", freed, lineTimeout)
	}
	t.Logf("%d slowloris and %d silent clients closed, the last %v after they came; the honest member's slowest answer took %v",
		each, each, freed.Round(time.Millisecond), worst.Round(time.Millisecond))
}

// ping has the honest member send itself a private line, and returns how long the answer took.
func ping(t *testing.T, honest *replay.Client) time.Duration {
	t.Helper()
	t0 := time.Now()
	if err := honest.Send([]byte("/msg honest ping\n"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := readUntil(honest, "honest (private): ping", 10*time.Second); err != nil {
		t.Fatalf("the honest member's answer: %v", err)
	}
	return time.Since(t0)
}

// dial connects a client and names it (it names itself in the room with /nick only if it is honest).
func dial(t *testing.T, addr, name string) *replay.Client {
	t.Helper()
	c, err := replay.Dial(name, addr, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Reset() })
	if name == "honest" {
		if err := c.Send([]byte("/nick honest\n"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// readUntil reads c's lines until one is want, and returns those before it.
func readUntil(c *replay.Client, want string, within time.Duration) ([]string, error) {
	deadline := time.Now().Add(within)
	var before []string
	for {
		line, err := c.ReadLine(time.Until(deadline))
		if err != nil {
			return before, fmt.Errorf("waiting for %q after %q: %w", want, before, err)
		}
		if line = strings.TrimSuffix(line, "\n"); line == want {
			return before, nil
		}
		before = append(before, line)
	}
}

// The handlers and the rest of the files are step05's: only the loop (main.go) and its clock
// (timers.go) are new. The copies may differ from step05's only in the lines listed here.
func TestCopiesDifferOnlyInListedLines(t *testing.T) {
	tracetest.CheckCopies(t, []tracetest.Copy{
		{Original: "../step05-epoll/protocol.go", Copy: "protocol.go"},
		{Original: "../step05-epoll/signals.go", Copy: "signals.go"},
		{Original: "../step05-epoll/accept.go", Copy: "accept.go"},
		{Original: "../step05-epoll/conn.go", Copy: "conn.go", Allowed: map[string]string{
			"spoke   bool     // its handlers heard a complete line from it (an echo: any bytes) since the loop looked": "what the idle clock needs from the handlers",
			"midLine bool     // part of a line has arrived and its newline has not":                                    "what the line clock needs from the handlers",
			"idle    deadline // the loop's: when it will have been silent too long (timers.go)":                        "each client's deadlines",
			"line    deadline // the loop's, while midLine: when its line will have taken too long to arrive":           "each client's deadlines",
			"": "a blank line before them",
		}},
		{Original: "../step05-epoll/echo.go", Copy: "echo.go", Allowed: map[string]string{
			"c.spoke = true // the loop's idle clock starts again (timers.go)":                                     "the echo tells the idle clock",
			"// timeout ends a client that has been silent for -idle (an echo has no lines, so no line deadline).": "the service's new handler",
			"func (e *echo) timeout(c *conn, why string) { end(c, why, e.tr) }":                                    "the service's new handler",
			"": "a blank line before it",
		}},
		{Original: "../step05-epoll/room.go", Copy: "room.go", Allowed: map[string]string{
			"rm.hear(c, c.in.feed(buf[:n]))": "read keeps the frames, to tell the clocks",
			"frames := c.in.feed(buf[:n])":   "read keeps the frames",
			"// What the loop's clocks need (timers.go): whether a line ended, and whether one is under way.": "read tells the clocks",
			"c.spoke, c.midLine = c.spoke || len(frames) > 0, len(c.in.partial) > 0 || c.in.skipping":         "read tells the clocks",
			"rm.hear(c, frames)": "read keeps the frames",
			"}":                  "the end of read, and of timeout's if",
			"":                   "a blank line before timeout",
			`// timeout is the loop's news that one of c's deadlines has passed: why is "idle" (no line for -idle)`: "the room's new handler",
			`// or "line" (a line begun -linetimeout ago has not ended). c is told and put out. What fits in its`:   "the room's new handler",
			"// socket now is sent, and the rest is not waited for: a client that stalls would hold its deadline's": "the room's new handler",
			"// reason to stay open.":                        "the room's new handler",
			"func (rm *room) timeout(c *conn, why string) {": "the room's new handler",
			`notice := "idle too long"`:                      "the room's new handler",
			`if why == "line" {`:                             "the room's new handler",
			`notice = "line too slow"`:                       "the room's new handler",
			`rm.say(c, "* "+notice)`:                         "the room's new handler",
			`rm.leave(c, "was put out: "+notice)`:            "the room's new handler",
			"rm.send(c)":                                     "the room's new handler",
			"if !c.wantClose {":                              "the room's new handler",
			"rm.drop(c)":                                     "the room's new handler",
			"end(c, why, rm.tr)":                             "the room's new handler",
		}},
		{Original: "../step05-epoll/poller.go", Copy: "poller.go", Allowed: map[string]string{
			"// The loop's side of epoll: the interest list, kept in step with what each client wants. Only the": "the header names the clock",
			"// loop (main.go) calls these; the handlers never see epoll.":                                       "the header names the clock",
			"// The loop's side of epoll: the interest list, kept in step with what each client wants, and each": "the header names the clock",
			"// client's deadlines, kept in step with what it said. Only the loop (main.go) calls these; the":    "the header names the clock",
			"// handlers never see epoll or the clock.":                                                          "the header names the clock",
			`"time"`: "the clock",
			"deadlines               // every deadline, the earliest first (timers.go)":                 "the poller holds the clock",
			"now       time.Time     // when the last wait returned: one reading of the clock per turn": "the poller holds the clock",
			"idleFor   time.Duration // -idle":                                                          "the poller holds the clock",
			"lineFor   time.Duration // -linetimeout":                                                   "the poller holds the clock",
			"": "blank lines around the additions",
			`c.idle, c.line = deadline{c: c, why: "idle"}, deadline{c: c, why: "line"}`: "watch starts a new client's idle clock",
			"p.set(&c.idle, p.now.Add(p.idleFor))":                                      "watch and keepTime",
			"p.keepTime(c)":                                                             "follow keeps the clocks in step too",
			"}":                                                                         "the ends of keepTime's blocks",
			"// keepTime keeps c's deadlines in step with what its handlers said: a line heard starts the idle":   "keepTime",
			"// clock again, the first bytes of a line start the line clock, and its newline stops it. While the": "keepTime",
			"// server does not read from c (it paused c), the line clock stops: the wait is the server's, not":   "keepTime",
			"// c's. A stopping server keeps no client's clock: the shutdown grace bounds them all.":              "keepTime",
			"func (p *poller) keepTime(c *conn) {": "keepTime",
			"switch {":                             "keepTime",
			"case p.stopping:":                     "keepTime",
			"p.clear(&c.idle)":                     "keepTime, and forget clears both clocks",
			"case c.spoke:":                        "keepTime",
			"c.spoke = false":                      "keepTime",
			"switch onClock := p.has(&c.line); {":  "keepTime",
			"case c.midLine && c.wantRead && !onClock && !p.stopping:":   "keepTime",
			"p.set(&c.line, p.now.Add(p.lineFor))":                       "keepTime",
			"case onClock && (!c.midLine || !c.wantRead || p.stopping):": "keepTime",
			"p.clear(&c.line)": "keepTime, and forget clears both clocks",
		}},
	})
}

// The demo's echo scenario is step03's, kept as a copy because go:embed cannot reach ../.
func TestScenarioCopies(t *testing.T) {
	tracetest.CheckScenarioCopies(t, map[string]string{
		"scenarios/echo-seed.txt": "../step03-write-queues/scenarios/seed.txt",
	})
}

// SIGTERM while a client that does not read has bytes queued: the grace is one more deadline in the
// heap, the wait says so ("until shutdown"), and when it passes the server closes everyone and exits.
func TestShutdownGraceIsADeadline(t *testing.T) {
	res := tracetest.Replay(t, ".", "../step03-write-queues/scenarios/shutdown.txt", "-echo")
	for _, want := range []string{"epoll_wait interest=2 until shutdown\n", "timeout    shutdown grace over: closing the clients still open\n", "<< server exit 0\n"} {
		if !strings.Contains(res.Transcript, want) {
			t.Errorf("no %q in the transcript:\n%s", want, res.Transcript)
		}
	}
}

// Under steady traffic the wait never times out, so a loop that looked at the clock only after an
// empty wait would never close anyone. c2 streams bytes at the echo without a pause while c1 says
// nothing: c1 must still be closed when its idle deadline passes, and the wait before that timeout
// must have returned events, not timed out.
func TestDeadlinesPassUnderSteadyTraffic(t *testing.T) {
	srv, err := replay.Start(tracetest.Binary(t, "."), "-echo", "-idle", "1s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	silent := dial(t, srv.Addr, "silent")
	stream, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	done := make(chan struct{})
	defer close(done)
	go func() { // the echo comes back and is thrown away: the stream must not stall on a full socket
		io.Copy(io.Discard, stream)
	}()
	go func() {
		chunk := make([]byte, 4096)
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := stream.Write(chunk); err != nil {
				return
			}
		}
	}()
	if err := silent.ExpectEOF(10 * time.Second); err != nil {
		t.Fatalf("the silent client, while another streamed: %v", err)
	}
	lines := tracing.Lines(srv.Trace())
	i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "timeout    c1 idle") })
	if i < 1 {
		t.Fatal("no timeout line for c1 in the trace")
	}
	if before := lines[i-1]; strings.HasPrefix(before, "ready      (none)") {
		t.Skipf("the stream paused long enough for a wait to time out (%q): the test proves nothing this run", before)
	}
	t.Logf("c1 closed while c2 streamed; the line before its timeout: %q", lines[i-1])
}
