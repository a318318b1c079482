//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// The room across two loops: every line reaches the members of both, names are unique across the
// room, /who and /msg span it. Compared loop by loop with testdata/span.trace: how the two loops'
// lines interleave changes from run to run, what each loop does for each action does not.
func TestSpanScenario(t *testing.T) {
	res := tracetest.Replay(t, ".", filepath.Join("scenarios", "span.txt"))
	tracetest.ComparePerLoop(t, filepath.Join("testdata", "span.trace"), res.Transcript)
	// For the lesson: one line said on L0, as each loop handled it.
	from := strings.Index(res.Transcript, ">> c1 send \"hello from loop 0\\n\"\n")
	to := strings.Index(res.Transcript, ">> c3 send \"/nick bob\\n\"\n")
	if from < 0 || to < from {
		t.Fatalf("no line from c1 followed by c3's /nick in the transcript:\n%s", res.Transcript)
	}
	tracetest.ComparePerLoop(t, filepath.Join("testdata", "span-hello.trace"), res.Transcript[from:to])
}

// step04's room scenarios and step03's echo scenarios, on two loops, against golden transcripts
// compared loop by loop. Their expects check what each client received.
func TestParentScenariosOnTwoLoops(t *testing.T) {
	for _, name := range []string{"room", "framing", "slow"} {
		t.Run("room-"+name, func(t *testing.T) {
			res := tracetest.Replay(t, ".", filepath.Join("..", "step04-chat", "scenarios", name+".txt"), "-loops", "2")
			var leave []*regexp.Regexp
			if name == "slow" {
				leave = append(leave, slowWrites)
			}
			tracetest.ComparePerLoop(t, filepath.Join("testdata", "room-"+name+".trace"), res.Transcript, leave...)
		})
	}
	for _, name := range []string{"seed", "half-close", "queued-chunks", "reset"} {
		t.Run("echo-"+name, func(t *testing.T) {
			res := tracetest.Replay(t, ".", filepath.Join("..", "step03-write-queues", "scenarios", name+".txt"), "-echo", "-loops", "2")
			tracetest.ComparePerLoop(t, filepath.Join("testdata", "echo-"+name+".trace"), res.Transcript)
		})
	}
}

// slowWrites matches, in the slow scenario, the lines whose number depends on TCP timing: c3 reads
// only when the scenario expects something, so whether its socket has space for a notice delivered
// from the other loop depends on when its kernel reopened its window. In step05 the notice is written
// in the turn that read it, before that can matter; here it is delivered in a later turn.
var slowWrites = regexp.MustCompile(`^L[0-9]+ ((write|unqueue) +c3 |(ready|epoll_wait|epoll_ctl) )`)

// loopOnly are the lines that only a server of several loops writes, or writes differently: the
// inbox in the interest list (and so every interest count), and the prefix.
var loopOnly = regexp.MustCompile(`^(epoll_ctl  ADD inbox |epoll_wait )`)

// One loop is step 05: on every room scenario, step05's transcript and step09 -loops 1's, without
// the L0 prefix, differ only in the inbox's registration and the interest counts it raises.
func TestOneLoopIsStep05(t *testing.T) {
	for _, name := range []string{"room", "framing"} {
		t.Run(name, func(t *testing.T) {
			sc := filepath.Join("..", "step04-chat", "scenarios", name+".txt")
			before := tracetest.Replay(t, "../step05-epoll", sc).Transcript
			one := strings.ReplaceAll(tracetest.Replay(t, ".", sc, "-loops", "1").Transcript, "L0 ", "")
			leave := []*regexp.Regexp{loopOnly}
			tracetest.SameReactions(t, "step05 -> step09 -loops 1 changes more than the inbox", before, one, leave, leave)
		})
	}
}

// The lesson's code diff, kept in testdata/step05-to-step09.diff and checked against both programs.
func TestCodeDiffFromStep05(t *testing.T) {
	tracetest.CodeDiff(t, "step05-epoll", "step09-multicore", "step05-to-step09.diff")
}

// The delivery promise, checked from outside on two loops dealt round-robin: every member hears every
// other member's lines exactly once, in the order they were said, and none of its own.
func TestEveryLineOnceInOrder(t *testing.T) {
	srv := start(t, tracetest.Binary(t, "."), "-loops", "2")
	checkDelivery(t, srv.Addr, 6, 100)
}

// -reuseport: each loop has its own listener, and the kernel picks one for each connection by a hash
// of the addresses, so which loop serves whom changes with the ephemeral ports: no golden, only
// the delivery check, and proof from the trace that both loops accepted clients (with 32 clients,
// the chance that a fair hash puts them all on one loop is 2 in 4 billion).
func TestReuseportSpreadsAndDelivers(t *testing.T) {
	srv := start(t, tracetest.Binary(t, "."), "-loops", "2", "-reuseport")
	checkDelivery(t, srv.Addr, 32, 20)
	if err := srv.Settle(0, false, replay.SettleWithin); err != nil {
		t.Fatal(err)
	}
	trace := srv.Trace()
	for _, l := range []string{"L0", "L1"} {
		if n := strings.Count(trace, "\n"+l+" accept "); n == 0 {
			t.Errorf("loop %s accepted no client of 32: is it listening?", l)
		}
	}
	if strings.Contains(trace, " pass ") {
		t.Error("with -reuseport a loop passed a client on: the kernel deals them, not loop 0")
	}
}

// The room shares memory between threads (the inboxes, the registry, the trace): this test builds
// the server with the race detector and runs the delivery check on four loops, then stops it. The
// race detector makes the process exit with status 66 if it saw a race.
func TestRaceBuiltFourLoops(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "step09-race")
	build := exec.Command("go", "build", "-race", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -race: %v\n%s", err, out)
	}
	srv := start(t, bin, "-loops", "4")
	checkDelivery(t, srv.Addr, 8, 100)
	if err := srv.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := srv.Wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || strings.Contains(srv.Stderr(), "DATA RACE") {
		t.Fatalf("the race-built server exited with status %d:\n%s", code, srv.Stderr())
	}
}

// SIGTERM: every loop hears it, tells its own members, sends what is queued and closes them; the
// server exits 0 once every loop has.
func TestStopTellsEveryLoop(t *testing.T) {
	s := tracetest.Open(t, ".", "-loops", "2")
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
	tracetest.ComparePerLoop(t, filepath.Join("testdata", "room-stop.trace"), s.Transcript())
}

const welcome = "* welcome, %s; commands: /nick NAME, /who, /msg NAME TEXT, /quit"

// Bad flags get one clear line and exit status 2.
func TestLoopsFlagIsChecked(t *testing.T) {
	out, err := exec.Command(tracetest.Binary(t, "."), "-loops", "0").CombinedOutput()
	if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 || !strings.Contains(string(out), "-loops") {
		t.Fatalf("%v, %q: want exit status 2 and a line about -loops", err, out)
	}
}

// The demo's scenarios are step04's and step03's, kept as copies because go:embed cannot reach ../.
func TestScenarioCopies(t *testing.T) {
	tracetest.CheckScenarioCopies(t, map[string]string{
		"scenarios/room.txt":      "../step04-chat/scenarios/room.txt",
		"scenarios/echo-seed.txt": "../step03-write-queues/scenarios/seed.txt",
	})
}

// start runs bin with args on a free port; it is killed when the test ends.
func start(t *testing.T, bin string, args ...string) *replay.Server {
	t.Helper()
	srv, err := replay.Start(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Kill)
	return srv
}

// checkDelivery brings members clients into the room at addr, waits until each has its welcome (it
// is in the room then), has each say lines lines at once, and checks that every member hears every
// other member's lines exactly once, in the order they were said, from the name it has, and none of
// its own. Every read has a deadline: a lost line fails the test, it does not hang it.
func checkDelivery(t *testing.T, addr string, members, lines int) {
	t.Helper()
	type member struct {
		conn net.Conn
		in   *bufio.Reader
		name string
	}
	ms := make([]*member, members)
	for i := range ms {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		m := &member{conn: conn, in: bufio.NewReader(conn)}
		welcome, err := m.in.ReadString('\n')
		name, ok := strings.CutPrefix(welcome, "* welcome, ")
		if name, _, ok2 := strings.Cut(name, ";"); err == nil && ok && ok2 {
			m.name = name
		} else {
			t.Fatalf("member %d: %q, %v: want a welcome", i, welcome, err)
		}
		ms[i] = m
	}
	byName := map[string]int{}
	for i, m := range ms {
		byName[m.name] = i
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*members)
	for i, m := range ms {
		wg.Go(func() { // say lines lines
			var b strings.Builder
			for j := range lines {
				fmt.Fprintf(&b, "m %d %d\n", i, j)
			}
			if _, err := m.conn.Write([]byte(b.String())); err != nil {
				errs <- fmt.Errorf("member %d: %v", i, err)
			}
		})
		wg.Go(func() { // hear everyone else's, once each, in order
			next := make([]int, members)
			for heard := 0; heard < (members-1)*lines; {
				line, err := m.in.ReadString('\n')
				if err != nil {
					errs <- fmt.Errorf("member %d (%s) heard %d of %d lines: %v", i, m.name, heard, (members-1)*lines, err)
					return
				}
				name, text, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ": ")
				if strings.HasPrefix(line, "* ") || !ok {
					continue // a notice: a join
				}
				f := append(strings.Fields(text), "", "", "")[:3]
				from, err1 := strconv.Atoi(f[1])
				seq, err2 := strconv.Atoi(f[2])
				switch {
				case f[0] != "m" || err1 != nil || err2 != nil || from < 0 || from >= members:
					errs <- fmt.Errorf("member %d heard %q", i, line)
					return
				case from == i || byName[name] != from:
					errs <- fmt.Errorf("member %d (%s) heard %q: from %s, as line of member %d", i, m.name, line, name, from)
					return
				case seq != next[from]:
					errs <- fmt.Errorf("member %d heard line %d of member %d, want line %d: lost, doubled or out of order", i, seq, from, next[from])
					return
				}
				next[from]++
				heard++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The handlers are step05's (which are step04's room and step03's echo), and so are the loop's helper
// files: the copies may differ from their originals only in the lines listed here. The room changes
// where it must span the loops: names come from the registry the loops share, /who and /msg look
// there, a line said here is shared with the other loops, and a private line may go to another loop.
func TestCopiesDifferOnlyInListedLines(t *testing.T) {
	registry := "names are unique across the room: the registry every loop shares (registry.go)"
	tracetest.CheckCopies(t, []tracetest.Copy{
		{Original: "../step05-epoll/conn.go", Copy: "conn.go"},
		{Original: "../step05-epoll/protocol.go", Copy: "protocol.go"},
		{Original: "../step05-epoll/signals.go", Copy: "signals.go"},
		{Original: "../step05-epoll/accept.go", Copy: "accept.go"},
		{Original: "../step05-epoll/poller.go", Copy: "poller.go", Allowed: map[string]string{
			"deaf     bool      // another loop's inbox is full: no client is read until it has room (inbox.go)": "a loop whose posts fill another's inbox stops reading",
			"if c.wantRead && !p.stopping || c.lingering {":                                                      "not read while deaf",
			"if c.wantRead && !p.stopping && !p.deaf || c.lingering {":                                           "not read while deaf",
		}},
		{Original: "../step05-epoll/echo.go", Copy: "echo.go", Allowed: map[string]string{
			"func (e *echo) deliver(message)    {}": "the service interface: echo clients never hear from another loop",
		}},
		{Original: "../step05-epoll/room.go", Copy: "room.go", Allowed: map[string]string{
			"guests   int     // default names handed out so far: guest1, guest2, ...":          registry,
			"*part            // what this loop's part of the room knows of the rest (span.go)": "the room spans the loops",
			"id      int     // its entry in the registry of names: how other loops address it": "another loop's private line names its member by id",
			"for c.name == \"\" || rm.find(c.name) != nil {":                                    registry,
			"rm.guests++": registry,
			"c.name = fmt.Sprintf(\"guest%d\", rm.guests)":                          registry,
			"c.id, c.name = rm.names.guest(rm.loop)":                                registry,
			"if other := rm.find(cmd.name); other != nil && other != c {":           registry,
			"if !rm.names.rename(c.id, cmd.name) {":                                 registry,
			"var names []string":                                                    "/who lists the registry",
			"for _, m := range rm.members {":                                        "/who lists the registry",
			"if !m.left {":                                                          "/who lists the registry",
			"names = append(names, m.name)":                                         "/who lists the registry",
			"rm.say(c, \"* in the room: \"+strings.Join(names, \", \"))":            "/who lists the registry",
			"rm.say(c, \"* in the room: \"+strings.Join(rm.names.names(), \", \"))": "/who lists the registry",
			"to := rm.find(cmd.name)":                                               "/msg looks its member up in the registry",
			"if to == nil {":                                                        "/msg looks its member up in the registry",
			"to, ok := rm.names.lookup(cmd.name)":                                   "/msg looks its member up in the registry",
			"if !ok {":                                                              "/msg looks its member up in the registry",
			"rm.say(to, c.name+\" (private): \"+cmd.text)":                          "/msg's member may be on another loop (span.go)",
			"rm.whisper(to, c.name+\" (private): \"+cmd.text)":                      "/msg's member may be on another loop (span.go)",
			"if to != c {":                                                          "/msg: is it to oneself",
			"if to.id != c.id {":                                                    "/msg: is it to oneself",
			"// find returns the member called name (names are unique regardless of case), or nil.": "the registry finds names",
			"func (rm *room) find(name string) *conn {":                                             "the registry finds names",
			"if !c.left && strings.EqualFold(c.name, name) {":                                       "the registry finds names",
			"for _, c := range rm.members {":                                                        "the registry finds names",
			"return c":                                                                              "the registry finds names",
			"return nil":                                                                            "the registry finds names",
			"}":                                                                                     "the ends of the blocks taken out",
			"":                                                                                      "the blank line after find",
			"rm.names.remove(c.id)":                                                                 "a member who leaves frees its name",
			"rm.share(from, line)":                                                                  "a line said here is posted once to every other loop (span.go)",
		}},
	})
}

// The lesson's picture of the loops, drawn from what a run of the span scenario did: what each loop's
// epoll instance watched (its epoll_ctl ADD lines), the clients loop 0 dealt to the other (pass), and
// the posts from each loop to another's inbox. Kept in testdata/loops.mmd, which
// docs/09-multicore.md includes.
func TestLoopsDiagram(t *testing.T) {
	res := tracetest.Replay(t, ".", filepath.Join("scenarios", "span.txt"))
	tracetest.Compare(t, filepath.Join("testdata", "loops.mmd"), loopDiagram(res.Transcript))
}

// loopDiagram draws a mermaid flowchart of the loops in a transcript. It reads only what each loop
// did, never how the loops' lines interleave, so the same scenario draws the same picture every run.
func loopDiagram(transcript string) string {
	var loops []string
	watched := map[string][]string{}  // loop -> what its epoll instance watched, in order
	dealt := map[[2]string][]string{} // from, to -> clients
	posts := map[[2]string]int{}      // from, to -> posts
	for _, l := range tracing.Lines(transcript) {
		f := strings.Fields(l)
		if len(f) < 3 || !regexp.MustCompile(`^L[0-9]+$`).MatchString(f[0]) {
			continue
		}
		loop := f[0]
		if _, ok := watched[loop]; !ok {
			loops = append(loops, loop)
			watched[loop] = nil
		}
		switch {
		case f[1] == "epoll_ctl" && f[2] == "ADD":
			watched[loop] = append(watched[loop], f[3])
		case f[1] == "pass" && len(f) == 5:
			dealt[[2]string{loop, f[4]}] = append(dealt[[2]string{loop, f[4]}], f[2])
		case f[1] == "post":
			posts[[2]string{loop, f[2]}]++
		}
	}
	slices.Sort(loops)
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	for _, loop := range loops {
		fmt.Fprintf(&b, "    subgraph %s [\"%s: one thread, one epoll instance\"]\n", loop, loop)
		var clients []string
		for _, name := range watched[loop] {
			switch name {
			case "inbox":
				fmt.Fprintf(&b, "        %s_inbox[(\"inbox (eventfd)\")]\n", loop)
			case "listener", "signals":
				fmt.Fprintf(&b, "        %s_%s[%s]\n", loop, name, name)
			default:
				clients = append(clients, name)
			}
		}
		fmt.Fprintf(&b, "        %s_clients[\"its clients: %s\"]\n", loop, strings.Join(clients, " "))
		b.WriteString("    end\n")
	}
	for _, from := range loops {
		for _, to := range loops {
			if cs := dealt[[2]string{from, to}]; len(cs) > 0 {
				fmt.Fprintf(&b, "    %s_listener -->|\"deals %s\"| %s_inbox\n", from, strings.Join(cs, " "), to)
			}
			if posts[[2]string{from, to}] > 0 {
				fmt.Fprintf(&b, "    %s_clients -->|lines for the room| %s_inbox\n", from, to)
			}
		}
	}
	b.WriteString("    registry[(\"registry of names (mutex)\")]\n")
	for _, loop := range loops {
		fmt.Fprintf(&b, "    %s_clients -.- registry\n", loop)
	}
	return b.String()
}
