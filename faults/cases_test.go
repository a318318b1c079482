//go:build linux

package faults

import (
	"bytes"
	"errors"
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
)

// A fault is a row of the matrix: one way a client (or the system) misbehaves, played against a step
// with two well-behaved clients, g1 and g2, beside it.
type fault struct {
	name  string
	what  string                   // what happens, for the table
	alone bool                     // runs with no other test running: it changes what the test's children inherit
	args  func(tg target) []string // if set, more flags for the server, after serverArgs (the later flag wins)
	run   func(r *row)
	// chatOnly: the fault is one of the room's (its commands, its lines); the echo's cells read n/a.
	chatOnly bool
	// bare: the row starts no server (r.s and r.srv are nil); it runs r.bin with r.args itself.
	bare bool
	// needs, if set, says why this machine cannot play the fault ("" if it can): the cell is skipped.
	needs func() string
}

var faultList = []fault{
	{name: "reset", what: "a client resets (SO_LINGER 0) in the middle of a line", run: resetMidLine},
	{name: "half-close", what: "a client sends a last line with no newline, then SHUT_WR, and reads on", run: halfClose},
	{name: "fin-pending", what: "a client that is behind on reading sends FIN while output for it is queued", run: finWithOutputPending},
	{name: "never-reads", what: "a client never reads what the server sends it", run: neverReads},
	{name: "burst-1000", what: "1,000 clients connect at once and leave at once (half close, half reset)", run: burst},
	{name: "emfile", what: "the server runs out of fds (RLIMIT_NOFILE lowered), then 3 clients connect", run: outOfFDs},
	{name: "fd-1024", what: "a client's fd is past 1023 (FD_SETSIZE)", alone: true, run: fdPastSetSize},
	{name: "1MiB-line", what: "a client sends 1 MiB with no newline, then a line", run: longLine},
	{name: "invalid-utf8", what: "a client sends bytes that are not UTF-8", run: invalidUTF8},
	{name: "escapes", what: "a client sends terminal escape sequences and control characters", run: escapes},
	{name: "flood", what: "a client streams 1000-byte lines as fast as TCP lets it (issue 20.2); the others keep being served", args: floodArgs, run: flood},
	{name: "vanish", what: "a client with a large write pending closes without reading it (the kernel sends RST)", run: vanish},
	{name: "SIGINT", what: "the server gets SIGINT with every queue empty", run: func(r *row) { signal(r, "INT") }},
	{name: "SIGTERM", what: "the server gets SIGTERM while a client that never reads has output queued", run: func(r *row) { signal(r, "TERM") }},
	{name: "ipv6", what: "the server is told to listen on [::1] (issue 20.1)", args: ipv6Args, needs: ipv6Loopback, run: ipv6},
	{name: "who-flood", what: "a member sends 64 KiB of /who in one write and never reads, 200 others in the room (issue 20.3)", chatOnly: true, run: whoFlood},
	{name: "fin-crowd", what: "900 members, each with 1000 bytes of unfinished line, send FIN at once (issue 20.4)", chatOnly: true, bare: true, args: finCrowdArgs, run: finCrowd},
	{name: "stop-reset", what: "while the server stops, an idle client resets (issue 20.5)", run: stopReset},
	{name: "flags", what: "a stray argument (-trace false -addr 127.0.0.1:0), and -sndbuf -5 (issue 20.6)", bare: true, run: badFlags},
	{name: "stop-linger", what: "SIGTERM with 200 clients that have sent bytes the server will not read (issue 20.7)", run: stopLinger},
	{name: "invisible", what: "a line with bidi overrides, zero-width characters and U+2028/2029 (issue 20.8)", chatOnly: true, run: invisible},
	{name: "slowloris", what: "1,000 members each send a byte every 100 ms and never a newline; step07 runs with -linetimeout 2s (issue 14)", chatOnly: true, args: slowlorisArgs, run: slowloris},
	{name: "silent", what: "1,000 clients connect and say nothing; step07 runs with -idle 2s (issue 14)", args: silentArgs, run: silent},
}

// bulk is the i-th of many 1000-byte lines from client from.
func bulk(from string, i int) string {
	s := fmt.Sprintf("%s line %03d ", from, i)
	return s + strings.Repeat(".", 1000-len(s))
}

// sayMany sends lines from m in one send; everyone who should reads them, in order.
func (r *row) sayMany(m *member, lines []string) {
	r.t.Helper()
	r.do("send %s %s", m.client, quote(strings.Join(lines, "\n")+"\n"))
	for _, l := range lines {
		if r.tg.chat {
			r.tell(m, m.nick+": "+l)
		} else if m.good {
			r.do("expect %s %s", m.client, quote(l+"\n"))
		}
	}
}

// fill gives client f, which does not read for now (rcvbuf 4096), tens of kilobytes of pending
// output: echo, it sends 60000 bytes; chat, g1 says 60 lines of 1000 bytes (less than the room's
// 64 KiB limit for a member's queue), which g2 reads. The socket buffers (the server's -sndbuf
// 16384, which the kernel doubles, and f's 4096, doubled too) take about 40 KB of it; the rest
// stays queued in the server. f is not shrunk further (stop-reading): a client that later reads
// through a window of a few hundred bytes is paced by the kernel's zero-window probes, seconds for
// 60 KB.
func (r *row) fill(f *member) {
	r.t.Helper()
	if !r.tg.chat {
		r.do("send %s 60000 bytes", f.client)
		return
	}
	var lines []string
	for i := range 60 {
		lines = append(lines, bulk("g1", i))
	}
	r.sayMany(r.byName["g1"], lines)
}

// readUntilEOF reads lines from client until the server closes the connection (EOF or reset).
func (r *row) readUntilEOF(client string) []string {
	r.t.Helper()
	c := r.s.Client(client)
	var lines []string
	for {
		l, err := c.ReadLine(10 * time.Second)
		if errors.Is(err, replay.ErrClosed) || errors.Is(err, replay.ErrReset) {
			if l != "" {
				lines = append(lines, l)
			}
			return lines
		}
		if err != nil {
			r.t.Fatalf("%s: %v (after %d lines)", client, err, len(lines))
		}
		lines = append(lines, strings.TrimSuffix(l, "\n"))
	}
}

// The client resets in the middle of a conversation, half a line sent. Its partial line is not
// relayed; the room hears it left; its fd is given back.
func resetMidLine(r *row) {
	r.setup()
	f := r.connect("f", true)
	r.say(f, "hello, I was just going to")
	r.do("send f %s", quote("say something when"))
	r.do("reset f")
	r.gone(f, "left (connection reset)")
	r.evidence(`^close\s+%s \(reset\)$`, f.trace)
	r.idle()
	r.noLeak()
	r.served()
}

// Half-close: the client's last line has no newline, and its FIN ends it. The echo sends it back; the
// room relays it (a last line counts). The client, which still reads, gets all that, then EOF.
func halfClose(r *row) {
	r.setup()
	f := r.connect("f", true)
	r.do("send f %s", quote("last words, no newline"))
	r.do("shutdown f")
	if r.tg.chat {
		r.tell(f, f.nick+": last words, no newline")
	} else {
		r.do("expect f %s", quote("last words, no newline"))
	}
	r.gone(f, "left")
	r.do("expect-eof f")
	r.evidence(`^read\s+%s EOF$`, f.trace)
	r.evidence(`^close\s+%s \(`, f.trace)
	r.idle()
	r.do("close f unnoticed")
	r.noLeak()
	r.served()
}

// FIN while the server still has output queued for the client: the server stops reading it, sends
// what is queued, and closes only then. The client reads every byte, then EOF.
func finWithOutputPending(r *row) {
	r.setup()
	f := r.connect("f", false, "rcvbuf=4096")
	r.fill(f)
	r.do("shutdown f")
	r.gone(f, "left")
	r.evidence(`^finish\s+%s \d+ bytes still to send, then close$`, f.trace)
	r.idle()
	if r.tg.chat {
		r.do("expect-line f %s", quote(welcome(f.nick)))
		for i := range 60 {
			r.do("expect-line f %s", quote("guest1: "+bulk("g1", i)))
		}
	} else {
		r.do("expect f 60000 bytes")
	}
	r.do("expect-eof f")
	r.evidence(`^close\s+%s \(`, f.trace)
	r.do("close f unnoticed")
	r.noLeak()
	r.served()
}

// A client that never reads. Echo: it sends 150000 bytes and reads none back; the server pauses
// reading it at the high-water mark (backpressure). Chat: g1 talks until the member's queue passes the
// room's limit, and the room puts it out. Either way the others are served all along.
func neverReads(r *row) {
	r.setup()
	f := r.connect("f", false, "rcvbuf=4096")
	r.do("stop-reading f")
	if !r.tg.chat {
		r.do("send f 150000 bytes")
		r.waitTrace(regexp.MustCompile(`^pause\s+`+f.trace+` `), 10*time.Second)
		r.evidence(`^pause\s+%s reading`, f.trace)
		r.idle() // f sits there, paused, its socket full
		r.served()
		r.do("reset f")
		r.evidence(`^close\s+%s \(reset\)$`, f.trace)
		r.noLeak()
		return
	}
	// One line at a time, so that the turn in which the room gives up on f is the turn of one line.
	// f's socket is full once its queue holds lines the socket did not take: a write need not have
	// hit EAGAIN for that (select and epoll stop reporting a socket writable while a third of its
	// buffer is still free, and every line so far fitted whole), so the test reads the queue's size.
	queued := regexp.MustCompile(`^queue\s+` + f.trace + ` \+\d+ bytes, (\d+) pending$`)
	putOut := regexp.MustCompile(`^close\s+` + f.trace + ` \(`)
	g2 := r.byName["g2"]
	idled := false
	for i := 0; ; i++ {
		// 64 KiB of queue, plus what the socket buffers hold (about 40 KB here), is about 105 lines.
		if i == 150 {
			r.t.Fatalf("150 lines of 1000 bytes and %s is still in the room", f.nick)
		}
		r.do("send g1 %s", quote(bulk("g1", i)+"\n"))
		if firstMatch(r.srv.Trace(), putOut) != "" {
			notice := "* " + f.nick + " was put out: too slow to read"
			r.expectAnyOrder(g2, "guest1: "+bulk("g1", i), notice)
			r.do("expect-line g1 %s", quote(notice))
			r.remove(f) // the room has told g1 and g2
			break
		}
		r.do("expect-line g2 %s", quote("guest1: "+bulk("g1", i)))
		if !idled && lastPending(r.srv.Trace(), queued) >= 10*len(bulk("g1", i)) {
			idled = true
			r.idle() // f sits there, its socket full, its queue growing
		}
	}
	if !idled {
		r.t.Errorf("the room put %s out before its queue held 10 lines", f.nick)
	}
	r.evidence(`^too-slow\s+%s `, f.trace)
	r.evidence(`^close\s+%s \(`, f.trace)
	r.do("close f unnoticed")
	r.noLeak()
	r.served()
}

// lastPending returns the pending count of the last trace line that queued matches (its first
// group), or 0.
func lastPending(trace string, queued *regexp.Regexp) int {
	n := 0
	for _, l := range tracing.Lines(trace) {
		if m := queued.FindStringSubmatch(unloop(l)); m != nil {
			n, _ = strconv.Atoi(m[1])
		}
	}
	return n
}

// expectAnyOrder reads len(lines) lines from m and checks they are lines, in any order.
func (r *row) expectAnyOrder(m *member, lines ...string) {
	r.t.Helper()
	c := r.s.Client(m.client)
	var got []string
	for range lines {
		l, err := c.ReadLine(10 * time.Second)
		if err != nil {
			r.t.Fatalf("%s: %v after %q", m.client, err, got)
		}
		got = append(got, strings.TrimSuffix(l, "\n"))
	}
	want := slices.Clone(lines)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		r.t.Fatalf("%s got %q, want %q in any order", m.client, got, want)
	}
}

// A burst: 1,000 clients connect and leave at once, half with a close and half with a reset, in
// waves of 100: the listen backlog holds 128, and a connection the kernel cannot queue has its
// handshake dropped and retried a second later (the kernel's flow control, not the step's), or lost
// if the client resets meanwhile. Every one is accepted and closed; the room announces each arrival
// and departure exactly once, in that order, to both well-behaved members.
func burst(r *row) {
	const n, wave = 1000, 100
	r.setup()
	accepts := regexp.MustCompile(`^accept\s+c\d+$`)
	closes := regexp.MustCompile(`^close\s+c\d+ \(`)
	for i := 0; i < n; {
		for end := i + wave; i < end; i++ {
			c, err := replay.Dial(fmt.Sprintf("b%d", i), r.srv.Addr, 0)
			if err != nil {
				r.t.Fatal(err)
			}
			if i%2 == 0 {
				c.Close()
			} else {
				c.Reset()
			}
		}
		r.waitCount(accepts, r.accepted+i, 10*time.Second)
	}
	r.waitCount(closes, n, 10*time.Second)
	if r.tg.chat {
		for _, g := range []string{"g1", "g2"} {
			r.checkBurstNotices(g, r.guests+1, n)
		}
	}
	trace := r.srv.Trace()
	if a, c := countMatches(trace, accepts)-r.accepted, countMatches(trace, closes); a != n || c != n {
		r.t.Errorf("%d accepted and %d closed, want %d and %d", a, c, n, n)
	}
	r.accepted += n
	r.guests += n
	r.cell.evidence = append(r.cell.evidence, "accept and close, once each for every client of the burst")
	r.idle()
	r.noLeak()
	r.served()
}

// checkBurstNotices reads 2n lines from client g: for each of the burst's members guestK, K from
// first on, one "joined" and then one notice that it left.
func (r *row) checkBurstNotices(g string, first, n int) {
	r.t.Helper()
	c := r.s.Client(g)
	joined, left := map[string]int{}, map[string]int{}
	notice := regexp.MustCompile(`^\* (guest\d+) (joined|left|left \(connection reset\))\n$`)
	for i := range 2 * n {
		l, err := c.ReadLine(10 * time.Second)
		if err != nil {
			r.t.Fatalf("%s: line %d of %d: %v", g, i+1, 2*n, err)
		}
		m := notice.FindStringSubmatch(l)
		if m == nil {
			r.t.Fatalf("%s got %q, want a notice that a member joined or left", g, l)
		}
		if m[2] == "joined" {
			joined[m[1]]++
		} else {
			if joined[m[1]] == 0 {
				r.t.Fatalf("%s heard that %s left before it joined", g, m[1])
			}
			left[m[1]]++
		}
	}
	for k := first; k < first+n; k++ {
		name := fmt.Sprintf("guest%d", k)
		if joined[name] != 1 || left[name] != 1 {
			r.t.Fatalf("%s heard %s join %d times and leave %d times, want once each", g, name, joined[name], left[name])
		}
	}
}

// Out of fds: the test lowers the server's RLIMIT_NOFILE (soft and hard, with prlimit) to the lowest fd
// number it does not use, so accept fails with EMFILE. Three clients connect at once: each must get a
// clear answer and be closed, with the loop asleep in between, not spinning on a listener that stays
// ready. The others are served; once one leaves, its fd serves a newcomer.
func outOfFDs(r *row) {
	r.setup()
	pid := r.srv.Pid()
	free := 0
	for fds := openFDs(r.t, pid); fds[free]; free++ {
	}
	lim := unix.Rlimit{Cur: uint64(free), Max: uint64(free)}
	if r.tg.limitAtStart {
		r.restartWithFDLimit(free)
	} else if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		r.t.Fatal(err)
	}
	var rushed []*replay.Client
	for i := range 3 {
		c, err := replay.Dial(fmt.Sprintf("f%d", i+1), r.srv.Addr, 0)
		if err != nil {
			r.t.Fatal(err)
		}
		defer c.Close()
		rushed = append(rushed, c)
	}
	cpu := r.srv.CPUTime()
	for _, c := range rushed {
		// Wait for the answer in short slices, watching the server's CPU: a spinning loop fails the
		// test within a fraction of a second instead of filling the trace pipe for the whole bound.
		deadline := time.Now().Add(10 * time.Second)
		var line string
		var err error
		for {
			line, err = c.ReadLine(100 * time.Millisecond)
			if err == nil || !strings.HasPrefix(err.Error(), "no newline") || time.Now().After(deadline) {
				break
			}
			if used := r.srv.CPUTime() - cpu; used > 300*time.Millisecond {
				r.t.Fatalf("%s got no answer; the server used %v of CPU meanwhile: it spins on the listener\ntrace (end):\n%s",
					c.Name, used, shortTranscript(r.srv.Trace()))
			}
		}
		if err != nil {
			r.t.Fatalf("%s, connected while the server is out of fds: %v", c.Name, err)
		}
		if _, err := c.ReadLine(10 * time.Second); !errors.Is(err, replay.ErrClosed) && !errors.Is(err, replay.ErrReset) {
			r.t.Fatalf("%s got %q and then %v, want the connection closed", c.Name, line, err)
		}
	}
	r.accepted += 3 // each refused client was accepted (with the spare fd), so it has a name in the trace
	r.waitCount(regexp.MustCompile(`\(refused: out of fds\)$`), 3, 10*time.Second)
	if used := r.srv.CPUTime() - cpu; used > 300*time.Millisecond {
		r.t.Errorf("the server used %v of CPU to refuse 3 clients", used)
	}
	r.evidence(`^accept\s+listener error EMFILE$`)
	r.evidence(`^close\s+c\d+ \(refused: out of fds\)$`)
	r.idle()
	r.noLeak()
	r.served()
	// The fds are still at the limit: a client that leaves makes room for the next.
	r.do("close g2")
	r.gone(r.byName["g2"], "left")
	g3 := r.connect("g3", true)
	r.say(g3, "g3 got g2's fd")
	r.say(r.byName["g1"], "welcome, g3")
}

// fd past 1023: the server starts with fds 0..~1007 taken (inherited from this test; see
// holdLowFDs), the free ones below 1024 are filled with idle clients p1, p2, ..., and then f connects:
// its fd is 1024 or more. A select loop cannot watch it: it must refuse f clearly and serve the rest
// (B19). An epoll loop serves it like any other.
func fdPastSetSize(r *row) {
	r.setup()
	fds := openFDs(r.t, r.srv.Pid())
	holes := 0
	for fd := range 1024 {
		if !fds[fd] {
			holes++
		}
	}
	if holes > 64 {
		r.t.Fatalf("the server has %d free fds below 1024: it did not inherit the fds the test held", holes)
	}
	for i := range holes {
		r.connect(fmt.Sprintf("p%d", i+1), false)
	}
	r.baseline = r.srv.OpenFDs()
	if r.tg.selectLoop {
		r.do("connect f")
		r.accepted++
		f := r.s.Client("f")
		line, err := f.ReadLine(10 * time.Second)
		if err != nil || !strings.Contains(line, "1024") {
			r.t.Fatalf("f got %q, %v: want a line saying why it is refused", line, err)
		}
		if _, err := f.ReadLine(10 * time.Second); !errors.Is(err, replay.ErrClosed) && !errors.Is(err, replay.ErrReset) {
			r.t.Fatalf("f was refused but not closed: %v", err)
		}
		r.anonymous = "c" + strconv.Itoa(r.accepted)
		r.evidence(`^close\s+%s \(refused: fd past FD_SETSIZE\)$`, r.anonymous)
	} else {
		f := r.connect("f", true)
		top := 0
		for fd := range openFDs(r.t, r.srv.Pid()) {
			top = max(top, fd)
		}
		if top < 1024 {
			r.t.Fatalf("the server's highest fd is %d: the test proves nothing", top)
		}
		r.anonymous = f.trace
		r.say(f, "served past 1023")
		r.evidence(`^read\s+%s \d+ bytes "served past 1023\\n"$`, f.trace)
		r.do("close f")
		r.gone(f, "left")
	}
	r.idle()
	r.noLeak()
	r.served()
}

// holdLowFDs fills this process's free fd numbers below 1008 with copies of /dev/null that are NOT
// close-on-exec, so that a child started now inherits them: the child's own fds then come from the
// few numbers left below 1024, and soon from 1024 up. It returns the function that closes them.
// Nothing else may start a child meanwhile: the faults that use it run alone.
func holdLowFDs(t *testing.T) func() {
	t.Helper()
	devnull, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	held := []int{devnull}
	release := func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}
	for {
		fd, err := unix.FcntlInt(uintptr(devnull), unix.F_DUPFD, 0) // F_DUPFD: without FD_CLOEXEC
		if err != nil {
			release()
			t.Fatal(err)
		}
		held = append(held, fd)
		if fd >= 1008 {
			return release
		}
	}
}

// A 1 MiB line with no newline. The echo has no lines: it sends the mebibyte back (the client reads
// while it sends). The room refuses the line once it passes -maxline, tells the sender once, skips to
// the newline and relays the next line; it holds no more than a line's worth meanwhile.
func longLine(r *row) {
	r.setup()
	f := r.connect("f", true)
	c := r.s.Client("f")
	flood := bytes.Repeat([]byte("x"), 1<<20)
	if r.tg.chat {
		if err := c.Send(flood, 30*time.Second); err != nil {
			r.t.Fatal(err)
		}
		r.do("expect-line f %s", quote("* line too long (over 1024 bytes): not sent; the lines around it were"))
		r.evidence(`^too-long\s+%s `, f.trace)
	} else {
		sent := make(chan error, 1)
		go func() { sent <- c.Send(flood, 30*time.Second) }()
		if err := c.Expect(flood, 30*time.Second); err != nil {
			r.t.Fatal(err)
		}
		if err := <-sent; err != nil {
			r.t.Fatal(err)
		}
		r.evidence(`^read\s+%s \d+ bytes "xxxxxxxxxx`, f.trace)
	}
	r.idle() // f sits there, its line unfinished
	if rss := statusBytes(r.t, r.srv.Pid(), "VmRSS"); rss > 64<<20 {
		r.t.Errorf("the server's resident memory is %d MiB after the flood", rss>>20)
	}
	if r.tg.chat {
		r.sayAs(f, "\nafter the flood\n", "after the flood")
		r.do("expect-nothing f 20ms") // one notice for the whole line, not one per read
	}
	r.do("close f")
	r.gone(f, "left")
	r.noLeak()
	r.served()
}

// Bytes that are not UTF-8. The echo returns them unchanged (bytes are bytes); the room relays the
// line with each invalid byte replaced by U+FFFD. Either way the trace quotes the raw read, escaped;
// what the other members receive (checked by sayAs) is the proof of the room's cleaning.
func invalidUTF8(r *row) {
	r.setup()
	f := r.connect("f", true)
	r.sayAs(f, "caf\xe9 \xff\xfe ok\n", "caf\uFFFD \uFFFD\uFFFD ok")
	r.evidence(`^read\s+%s \d+ bytes "caf\\xe9 \\xff\\xfe ok\\n"$`, f.trace)
	r.idle()
	r.do("close f")
	r.gone(f, "left")
	r.noLeak()
	r.served()
}

// Terminal escape sequences (clear screen, colours, a C1 CSI), BEL, backspace and a carriage return.
// The echo returns them (the client asked for its own bytes); the room removes every control
// character before the line reaches another member's terminal (checked by sayAs: what the others
// receive). The trace quotes the raw read, escaped: no control byte reaches the terminal of whoever
// reads the trace either.
func escapes(r *row) {
	r.setup()
	f := r.connect("f", true)
	r.sayAs(f, "\x1b[2J\x1b[31mred\x1b[0m \u009b1mbold\a\b \rover\n", "[2J[31mred[0m 1mbold over")
	r.evidence(`^read\s+%s \d+ bytes "\\x1b\[2J\\x1b\[31mred\\x1b\[0m \\u009b1mbold\\a\\b \\rover\\n"$`, f.trace)
	for _, l := range strings.SplitAfter(r.srv.Trace(), "\n") {
		if i := strings.IndexFunc(strings.TrimSuffix(l, "\n"), func(c rune) bool { return c < 0x20 || c == 0x7f || c >= 0x80 && c < 0xa0 }); i >= 0 {
			r.t.Errorf("a trace line holds a raw control character: %q", l)
		}
	}
	r.idle()
	r.do("close f")
	r.gone(f, "left")
	r.noLeak()
	r.served()
}

// A client vanishes while a large write to it is pending: it closes with data unread, so its kernel
// answers with RST. The server drops what was queued for it, closes it, and serves the rest.
func vanish(r *row) {
	r.setup()
	f := r.connect("f", false, "rcvbuf=4096")
	r.do("stop-reading f")
	r.fill(f)
	r.idle() // f sits there, not reading, its output pending
	r.do("close f")
	r.gone(f, "left (connection reset)")
	r.evidence(`^drop\s+%s \d+ pending bytes$`, f.trace)
	r.evidence(`^close\s+%s \(`, f.trace)
	r.noLeak()
	r.served()
}

// SIGINT or SIGTERM: the server stops accepting, tells the room it is going down, sends what is
// queued (giving up on a client that does not read, after a bound), closes every connection and exits
// with status 0. With TERM, f never reads and has output queued.
func signal(r *row, sig string) {
	r.setup()
	var f *member
	if sig == "TERM" {
		f = r.connect("f", false, "rcvbuf=4096")
		r.fill(f)
	}
	r.served()
	r.do("signal %s", sig)
	r.evidence(`^signal\s+SIG%s\b`, sig)
	for _, g := range []string{"g1", "g2"} {
		lines := r.readUntilEOF(g)
		if !r.tg.chat && len(lines) > 0 {
			r.t.Errorf("%s got %q before EOF, want nothing", g, lines)
		}
		if r.tg.chat && (len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "* ")) {
			r.t.Errorf("%s got %q before EOF, want a notice that the server is going down", g, lines)
		}
	}
	r.do("expect-exit 0")
	if f != nil {
		r.readUntilEOF("f") // whatever part of its queue was sent, then the end
		r.evidence(`^close\s+%s \(`, f.trace)
	}
	r.evidence(`^close\s+listener\b`)
}

// restartWithFDLimit stops the row's server and starts it again under prlimit(1) with RLIMIT_NOFILE
// at limit, then connects g1 and g2 again: a server whose accept request was submitted before a
// limit was lowered keeps the old one (io_uring reads it when it prepares the request), so for it
// the limit must be there from the start, as it is in production.
func (r *row) restartWithFDLimit(limit int) {
	r.t.Helper()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		r.t.Fatal("prlimit(1) (util-linux) is needed to start the server with few fds:", err)
	}
	r.s.Close()
	wrapper := filepath.Join(r.t.TempDir(), filepath.Base(r.started[0]))
	script := fmt.Sprintf("#!/bin/sh\nexec %s --nofile=%d:%d %s \"$@\"\n", prlimit, limit, limit, r.started[0])
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		r.t.Fatal(err)
	}
	s, err := replay.Open(wrapper, r.started[1:]...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { s.Close() })
	r.s, r.srv = s, s.Server()
	r.accepted, r.guests, r.members, r.byName = 0, 0, nil, map[string]*member{}
	r.setup()
}
