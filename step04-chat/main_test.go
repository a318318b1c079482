//go:build linux || darwin

package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/scenario"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

const welcome = "* welcome, %s; commands: /nick NAME, /who, /msg NAME TEXT, /quit"

// Three members join, chat, change names, ask who is here, whisper; one quits, one resets. This is
// also what -demo plays.
func TestRoomScenario(t *testing.T) {
	res := tracetest.Golden(t, "room")
	// Each member saw exactly its own share of the room, nobody else's private message.
	if got := string(res.Saw("c1")); strings.Contains(got, "psst") {
		t.Errorf("c1 saw a private message to carol: %q", got)
	}
}

// B14: a line split over reads is joined, two lines in one read are two lines; over-long lines,
// control characters and broken UTF-8 are dealt with.
func TestB14_LinesAreFramed(t *testing.T) {
	res := tracetest.Golden(t, "framing")
	// c1 wrote "hel", "lo, wor", "ld\n" and the server read them as three reads: one line came out.
	if !strings.Contains(res.Transcript, `read       c1 3 bytes "hel"`+"\n"+`select `) {
		t.Error(`the server did not read "hel" on its own, or queued something for it`)
	}
}

// B13: a member who does not read is put out once its socket is full and its queue reaches the limit;
// the others are answered all along, and what the server holds for the slow member stays bounded.
func TestB13_SlowMemberIsPutOutRoomKeepsMoving(t *testing.T) {
	res := tracetest.Golden(t, "slow")
	lines := tracing.Lines(res.Transcript)
	stuck := index(lines, "write      c2 EAGAIN")
	answered := index(lines, `<< c1 "* in the room: guest1, guest2, guest3\n"`)
	out := index(lines, "close      c2 (too slow)")
	if !(stuck >= 0 && stuck < answered && answered < out) {
		t.Fatalf("want c2 stuck (line %d), then c1 answered (line %d), then c2 put out (line %d)", stuck, answered, out)
	}
	for _, l := range lines[stuck+1 : out] {
		if strings.HasPrefix(l, "write      c2 ") || strings.HasPrefix(l, "ready ") && strings.Contains(l, "write=[c2") {
			t.Errorf("c2 was written to while stuck: %s", l)
		}
	}
	// The queue never held more than the limit plus one turn's lines (14400 bytes here).
	pendingRe := regexp.MustCompile(`^queue +c2 .*, (\d+) pending$`)
	for _, l := range lines {
		if m := pendingRe.FindStringSubmatch(l); m != nil {
			if n, _ := strconv.Atoi(m[1]); n > 16384+14400 {
				t.Errorf("c2's queue grew to %d bytes", n)
			}
		}
	}
}

// B12: the broadcast that finds a member too slow goes on to the members after it. The seed removed
// the failing member from the list it was walking, so the next member missed the message.
func TestB12_BroadcastSkipsNobodyWhenOneIsPutOut(t *testing.T) {
	sc, err := scenario.ParseFile(filepath.Join("scenarios", "slow.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s := tracetest.Open(t, ".", sc.Args...)
	if err := s.Play(sc); err != nil {
		t.Fatalf("%v\n%s", err, s.Transcript())
	}
	// c3 comes after c2 in the room. It must have c1's whole second burst (pattern bytes 12800 to
	// 25600, as lines from guest1), then the notice about c2.
	var want strings.Builder
	for _, l := range strings.SplitAfter(string(scenario.Pattern(12800, 12800)), "\n") {
		if l != "" {
			want.WriteString("guest1: " + l)
		}
	}
	want.WriteString("* guest2 was put out: too slow to read\n")
	if err := s.Client("c3").Expect([]byte(want.String()), 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// B10: every line and notice carries its sender's own name. The seed used the address of the last
// client it had accepted, so after c2 joined, c1's lines and c1's leaving were told as c2's.
func TestB10_NoticesUseSendersName(t *testing.T) {
	s := tracetest.Open(t, ".")
	tracetest.Do(t, s, fmt.Sprintf(`
connect c1
expect-line c1 %q
connect c2
expect-line c2 %q
expect-line c1 "* guest2 joined"
send c1 "/nick alice\n"
expect-line c1 "* you are now alice"
expect-line c2 "* guest1 is now alice"
send c1 "hi, I came first\n"
expect-line c2 "alice: hi, I came first"
send c2 "hello alice\n"
expect-line c1 "guest2: hello alice"
close c1
expect-line c2 "* alice left"
`, fmt.Sprintf(welcome, "guest1"), fmt.Sprintf(welcome, "guest2")))
}

// B11: however a member goes, the room hears it exactly once, and the server lets go of the socket
// (a server spinning on a closed socket would never settle, and Do would fail).
func TestB11_EveryWayOfLeavingIsToldOnce(t *testing.T) {
	for _, tc := range []struct {
		name, args, leave, notice, traced string
	}{
		{"EOF", "", "close c2", "* guest2 left", "close      c2 (EOF)"},
		{"half-close", "", "shutdown c2", "* guest2 left", "close      c2 (EOF)"},
		{"reset", "", "reset c2", "* guest2 left (connection reset)", "close      c2 (reset)"},
		{"quit", "", "send c2 \"/quit\\n\"\nexpect-line c2 \"* bye\"\nexpect-eof c2", "* guest2 left", "close      c2 (left)"},
		// c2 half-closes with lines still queued for it (its socket is full), then resets: the
		// server learns of the reset from a failed write, after the leave notice went out.
		{"write error", "-sndbuf 4096", "send c1 12800 bytes\nshutdown c2\nexpect-line c1 \"* guest2 left\"\nreset c2",
			"", "write      c2 error "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tracetest.Open(t, ".", strings.Fields(tc.args)...)
			// c2 reads its welcome: a socket closed with unread data sends RST, not FIN.
			tracetest.Do(t, s, fmt.Sprintf("connect c1\nexpect-line c1 %q\nconnect c2 rcvbuf=4096\nexpect-line c2 %q\nexpect-line c1 \"* guest2 joined\"\n",
				fmt.Sprintf(welcome, "guest1"), fmt.Sprintf(welcome, "guest2")))
			tracetest.Do(t, s, tc.leave)
			if tc.notice != "" {
				tracetest.Do(t, s, fmt.Sprintf("expect-line c1 %q", tc.notice))
			}
			tracetest.Do(t, s, "expect-nothing c1")
			trace := s.Server().Trace()
			if !strings.Contains(trace, tc.traced) {
				t.Errorf("the trace has no %q:\n%s", tc.traced, trace)
			}
			if n := strings.Count(trace, "\nleave      c2 "); n != 1 {
				t.Errorf("c2 left %d times in the trace, want 1", n)
			}
		})
	}
}

// B15: bytes are bytes. Broken UTF-8 and control bytes reach the others cleaned, and one member's
// error (a reset) touches nobody else. The seed's bare except closed every receiver on one error.
func TestB15_BadBytesAndOneMembersErrorHarmNobodyElse(t *testing.T) {
	s := tracetest.Open(t, ".")
	tracetest.Do(t, s, fmt.Sprintf(`
connect c1
expect-line c1 %q
connect c2
expect-line c2 %q
expect-line c1 "* guest2 joined"
connect c3
expect-line c3 %q
expect-line c1 "* guest3 joined"
expect-line c2 "* guest3 joined"
send c1 "\xff\x00\x1b[31m still text\n"
expect-line c2 "guest1: \ufffd[31m still text"
expect-line c3 "guest1: \ufffd[31m still text"
reset c2
expect-line c1 "* guest2 left (connection reset)"
expect-line c3 "* guest2 left (connection reset)"
send c1 "still here?\n"
expect-line c3 "guest1: still here?"
send c3 "/who\n"
expect-line c3 "* in the room: guest1, guest3"
`, fmt.Sprintf(welcome, "guest1"), fmt.Sprintf(welcome, "guest2"), fmt.Sprintf(welcome, "guest3")))
}

// Names: the default one, /nick validated and unique regardless of case, freed when its owner leaves;
// /msg to nobody; unknown commands get help.
func TestNamesAndCommands(t *testing.T) {
	s := tracetest.Open(t, ".")
	tracetest.Do(t, s, fmt.Sprintf(`
connect c1
expect-line c1 %q
send c1 "/nick guest2\n"
expect-line c1 "* you are now guest2"
connect c2
expect-line c2 %q
expect-line c1 "* guest3 joined"
send c2 "/nick GUEST2\n"
expect-line c2 "* the name GUEST2 is taken"
send c2 "/nick x y\n"
expect-line c2 "* usage: /nick NAME"
send c2 "/msg nobody hello\n"
expect-line c2 "* nobody here is called nobody"
send c2 "/msg Guest2 hello there\n"
expect-line c1 "guest3 (private): hello there"
send c2 "/dance\n"
expect-line c2 "* unknown command /dance; commands: /nick NAME, /who, /msg NAME TEXT, /quit"
send c2 "   \n\n"
send c2 "/who\n"
expect-line c2 "* in the room: guest2, guest3"
close c1
expect-line c2 "* guest2 left"
send c2 "/nick guest2\n"
expect-line c2 "* you are now guest2"
`, fmt.Sprintf(welcome, "guest1"), fmt.Sprintf(welcome, "guest3")))
}

// B16: the seed listened on a hard-coded private address. This server listens on loopback unless
// told otherwise.
func TestB16_LoopbackByDefault(t *testing.T) {
	out, _ := exec.Command(tracetest.Binary(t, "."), "-h").CombinedOutput()
	if !strings.Contains(string(out), `(default "127.0.0.1:8000")`) {
		t.Errorf("-addr does not default to 127.0.0.1:8000:\n%s", out)
	}
}

// B19 in a chat room: a client whose fd does not fit in select's set is told the room is full and
// closed; nobody in the room hears of it, and the room goes on. Instead of 1000 clients, the server
// starts with fds 3 to 1015 already taken (inherited copies of /dev/null), so its next few clients
// reach FD_SETSIZE.
func TestB19_RoomFullPastFDSetSize(t *testing.T) {
	const taken = 1013
	tracetest.RaiseFDLimit(t, 1100)
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	cmd := exec.Command(tracetest.Binary(t, "."), "-trace=false", "-addr", "127.0.0.1:0")
	for range taken {
		cmd.ExtraFiles = append(cmd.ExtraFiles, null)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	first, err := bufio.NewReader(stderr).ReadString('\n')
	m := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(first)
	if m == nil {
		t.Fatalf("server said %q, %v", first, err)
	}

	var members []*replay.Client
	refused := 0
	for i := 1; refused < 3; i++ {
		if i > 20 {
			t.Fatalf("%d clients and %d refused: the fds never reached FD_SETSIZE", i-1, refused)
		}
		c, err := replay.Dial(fmt.Sprintf("c%d", i), m[1], 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		line, err := c.ReadLine(10 * time.Second)
		switch {
		case err != nil:
			t.Fatalf("client %d: %v", i, err)
		case line == roomFull:
			refused++
			if _, err := c.ReadLine(10 * time.Second); err != replay.ErrClosed && err != replay.ErrReset {
				t.Fatalf("client %d was refused but not closed: %v", i, err)
			}
		case refused > 0:
			t.Fatalf("client %d got %q after an earlier client was refused", i, line)
		case line != fmt.Sprintf(welcome, fmt.Sprintf("guest%d", len(members)+1))+"\n":
			t.Fatalf("client %d got %q", i, line)
		default:
			members = append(members, c)
		}
	}
	if len(members) < 2 {
		t.Fatalf("only %d members before the room was full: adjust taken", len(members))
	}
	// The members heard each other join, and nothing about the refused: the last member's line is
	// the next thing the first one reads.
	first1, last := members[0], members[len(members)-1]
	for j := 2; j <= len(members); j++ {
		if err := first1.ExpectLine([]byte(fmt.Sprintf("* guest%d joined\n", j)), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := last.Send([]byte("the room goes on\n"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := first1.ExpectLine([]byte(fmt.Sprintf("guest%d: the room goes on\n", len(members))), 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// Bad limits get one clear line and exit status 2.
func TestLimitFlagsAreChecked(t *testing.T) {
	out, err := exec.Command(tracetest.Binary(t, "."), "-maxqueue", "0").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "-maxqueue") {
		t.Fatalf("%v, %q: want status 2 and a line about -maxqueue", err, out)
	}
}

func index(lines []string, want string) int {
	for i, l := range lines {
		if l == want {
			return i
		}
	}
	return -1
}

// SIGTERM: the server stops accepting, tells the room, sends what is queued, closes and exits 0.
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
expect-exit 0
`, fmt.Sprintf(welcome, "guest1"), fmt.Sprintf(welcome, "guest2")))
}

// The loop is step03's, and so are conn.go, accept.go and signals.go: they may differ from step03's
// only in the lines listed here (the room is the new service; room.go and protocol.go are new files).
func TestCopiesDifferOnlyInListedLines(t *testing.T) {
	tracetest.CheckCopies(t, []tracetest.Copy{
		{Original: "../step03-write-queues/signals.go", Copy: "signals.go"},
		{Original: "../step03-write-queues/conn.go", Copy: "conn.go", Allowed: map[string]string{
			"// The room's (room.go): who this member is, the line it is sending, whether its socket is full.": "the room's state per member",
			"name    string // B10: every line and notice about this member uses this, the member's own name":  "the room's state",
			"in      framer // the line being received, until its newline arrives":                             "the room's state",
			"blocked bool   // the last write hit EAGAIN: the socket has no space, the queue waits for it":     "the room's state: putOutSlow reads it",
			"": "a blank line before the room's fields",
		}},
		{Original: "../step03-write-queues/accept.go", Copy: "accept.go", Allowed: map[string]string{
			`const refusal = "server busy: out of file descriptors, try again later\n"`:                               "the room refuses in its own style",
			`const refusal = "* the room is full: the server is out of file descriptors, try again later\n"`:          "the room refuses in its own style",
			"// No Nagle: it holds a short write back until the previous one is acknowledged, and a member who":       "a member who only listens acknowledges late",
			"// only listens acknowledges late (delayed ACK, up to 40 ms). Go's net package turns it off too.":        "no Nagle",
			"unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)":                                           "no Nagle",
			`unix.Write(fd, []byte("server full: this server uses select, which cannot watch more than 1024 fds\n"))`: "the room refuses in its own style",
			"// It never joined, so nobody else is told.":                                                             "the room refuses in its own style",
			"unix.Write(fd, []byte(roomFull))":                                                                        "the room refuses in its own style",
			"// roomFull is all a client past FD_SETSIZE hears: this server cannot watch its fd.":                     "the room refuses in its own style",
			`const roomFull = "* the room is full: this server uses select, which cannot watch more than 1024 fds\n"`: "the room refuses in its own style",
			"": "a blank line before roomFull",
		}},
	})
}
