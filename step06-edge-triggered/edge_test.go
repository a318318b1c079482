//go:build linux

package main

// The tests of what edge-triggered epoll changes: the loop drains what an event announced, remembers
// a FIN, re-arms a paused client, and spreads its reads fairly (the read budget and the owed list).

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

// Every turn that reads from a client reads until it knows there is nothing left (EAGAIN, a short
// read, EOF, an error, a pause, the member leaving the room) or says that it owes the client a read;
// a short read is not enough once an event said RDHUP or HUP: then the reads go on to EOF. And no turn
// reads more than the default budget of 4 times from one client. Checked on every golden transcript.
func TestEveryReadGoesOnUntilDrainedOrOwed(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.trace"))
	if len(files) == 0 {
		t.Fatal("no golden transcripts")
	}
	read := regexp.MustCompile(`^read +(c\d+) (\d+) bytes`)
	for _, file := range files {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		open := map[string]bool{} // clients read from in this turn, not drained (or ended) yet
		fin := map[string]bool{}  // clients an event said RDHUP or HUP of: the loop remembers it
		reads := map[string]int{} // reads from each client in this turn
		for i, l := range tracing.Lines(string(text)) {
			f := strings.Fields(l)
			if len(f) == 0 {
				continue
			}
			if m := read.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[2])
				if n < 64<<10 && !fin[m[1]] {
					delete(open, m[1])
				} else {
					open[m[1]] = true
				}
			} else if len(f) >= 2 && (f[0] == "read" || f[0] == "pause" || f[0] == "close" || f[0] == "finish" || f[0] == "leave" || f[0] == "owed") {
				delete(open, f[1])
			}
			if f[0] == "read" {
				if reads[f[1]]++; reads[f[1]] > 4 {
					t.Errorf("%s:%d: %d reads from %s in one turn, past the budget of 4", file, i+1, reads[f[1]], f[1])
				}
			}
			if f[0] == "ready" {
				for _, ev := range f[1:] {
					name, events, _ := strings.Cut(ev, "=")
					fin[name] = fin[name] || strings.Contains(events, "HUP")
				}
			}
			if f[0] == "epoll_wait" {
				if len(open) > 0 {
					t.Errorf("%s:%d: the loop waits again though the last read from %v did not drain it, and owes it nothing", file, i+1, open)
				}
				open, reads = map[string]bool{}, map[string]int{}
			}
		}
	}
}

// What goes wrong edge-triggered if a read stops early, shown on the kernel itself. 100 bytes arrive;
// the reader takes 10 and asks epoll again. Level-triggered, epoll reports the socket again: 90 bytes
// are waiting. Edge-triggered, it reports nothing: the socket did not *become* readable, it stayed so.
// The 90 bytes are noticed only when more arrive; a client waiting for the echo of what it sent never
// sends more, and waits forever. Hence the rule this loop follows: drain, or remember that it owes a
// read (the owed list), since no event will remind it.
func TestReadThatStopsEarlyIsNotReportedAgain(t *testing.T) {
	for _, m := range []struct {
		name   string
		mode   uint32
		report int // events for the 90 bytes left behind
	}{{"LT", 0, 1}, {"ET", unix.EPOLLET, 0}} {
		t.Run(m.name, func(t *testing.T) {
			p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(p[0])
			defer unix.Close(p[1])
			ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(ep)
			if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p[1], &unix.EpollEvent{Events: unix.EPOLLIN | m.mode, Fd: int32(p[1])}); err != nil {
				t.Fatal(err)
			}
			ready := func() int { // a wait that does not block: what is ready right now
				events := make([]unix.EpollEvent, 4)
				for {
					n, err := unix.EpollWait(ep, events, 0)
					if err != unix.EINTR {
						if err != nil {
							t.Fatal(err)
						}
						return n
					}
				}
			}
			if _, err := unix.Write(p[0], make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
			if n := ready(); n != 1 {
				t.Fatalf("100 bytes arrived, epoll reports %d sockets, want 1", n)
			}
			if n, err := unix.Read(p[1], make([]byte, 10)); n != 10 || err != nil {
				t.Fatalf("read: %d, %v", n, err)
			}
			left, _ := unix.IoctlGetInt(p[1], unix.SIOCINQ)
			if left != 90 {
				t.Fatalf("%d bytes left unread, want 90", left)
			}
			if n := ready(); n != m.report {
				t.Fatalf("with 90 bytes left unread, epoll reports %d sockets, want %d", n, m.report)
			}
			if _, err := unix.Write(p[0], []byte{1}); err != nil {
				t.Fatal(err)
			}
			if n := ready(); n != 1 {
				t.Fatalf("after one more byte epoll reports %d sockets, want 1", n)
			}
		})
	}
}

// burst is more than one read of 64 KiB and less than a stopped server's socket takes in (about
// 128 KB): all of it is in the kernel before the server looks, and nothing more arrives after.
const burst = 100000

// A burst arrives while the server cannot look (it is stopped with SIGSTOP), so epoll has one edge to
// report for all of it. With a budget of reads that covers it (the default, 4; or 0, the naive drain,
// no budget at all), the turn after SIGCONT reads it all, to the short read that drains it, and queues
// the whole burst; had it stopped after one read, the rest would never be echoed (nothing re-arms c1:
// its echo goes out at once, with no epoll_ctl). That turn is compared with testdata/burst.trace, the
// same for both.
func TestBurstIsReadInOneTurn(t *testing.T) {
	for _, budget := range []string{"4", "0"} {
		t.Run("readbudget="+budget, func(t *testing.T) {
			srv, turns := burstTurns(t, "-readbudget", budget)
			turn := strings.Join(turns[0], "\n") + "\n"
			tracetest.Compare(t, filepath.Join("testdata", "burst.trace"), turn)
			if reads := strings.Count(turn, "\nread       c1 "); reads != 2 || !strings.Contains(turn, fmt.Sprintf(", %d pending\n", burst)) {
				t.Fatalf("one turn should read and queue the whole burst, in 2 reads:\n%s", srv.Trace())
			}
		})
	}
}

// The budget at work, on the same burst: with -readbudget 1 the turn after SIGCONT reads 64 KiB and
// stops; c1 is owed a read. No edge will come for the rest (it arrived before the first read), yet the
// next turn reads it: the wait does not sleep while someone is owed (its ready line reports nothing
// for c1), and the loop pays what it owes. The turns are compared with testdata/burst-owed.trace.
func TestOwedClientIsReadAgainWithoutANewEdge(t *testing.T) {
	const budget = 1
	srv, turns := burstTurns(t, "-readbudget", strconv.Itoa(budget))
	var b strings.Builder
	for _, turn := range turns {
		b.WriteString(strings.Join(turn, "\n") + "\n")
	}
	tracetest.Compare(t, filepath.Join("testdata", "burst-owed.trace"), b.String())
	if len(turns) < 2 {
		t.Fatalf("with a budget of %d read, the burst took %d turn:\n%s", budget, len(turns), srv.Trace())
	}
	read := 0
	for i, turn := range turns {
		reads := 0
		for _, l := range turn {
			if n, ok := readBytes(l, "c1"); ok {
				reads++
				read += n
			}
			if i > 0 && strings.HasPrefix(l, "ready ") && strings.Contains(l, "c1=") && strings.Contains(l, "IN") {
				t.Errorf("turn %d: epoll reported c1 readable again (%q): the test meant the rest to come with no new edge", i+1, l)
			}
		}
		if reads > budget {
			t.Errorf("turn %d reads %d times from c1, past the budget of %d:\n%s", i+1, reads, budget, strings.Join(turn, "\n"))
		}
		if owed := slicesContainsPrefix(turn, "owed       c1 "); owed != (i < len(turns)-1) {
			t.Errorf("turn %d: owed line %v, want it in every turn but the last:\n%s", i+1, owed, strings.Join(turn, "\n"))
		}
	}
	if read != burst {
		t.Errorf("the turns read %d bytes from c1, want the burst's %d", read, burst)
	}
}

// readBytes returns the byte count of a trace line that says a read from client took bytes.
func readBytes(line, client string) (int, bool) {
	f := strings.Fields(line)
	if len(f) < 4 || f[0] != "read" || f[1] != client || f[3] != "bytes" {
		return 0, false
	}
	n, err := strconv.Atoi(f[2])
	return n, err == nil
}

func slicesContainsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// burstTurns starts the echo with args (and a high-water mark above the burst), stops it, lets c1's
// burst arrive whole, continues it, waits for the whole echo, and returns the turns that read c1: from
// the first ready line after SIGCONT, one turn per wait, up to the turn whose read drained c1.
func burstTurns(t *testing.T, args ...string) (*replay.Server, [][]string) {
	t.Helper()
	srv, c1 := stoppedWithClient(t, append([]string{"-echo", "-highwater", "1000000"}, args...)...)
	from := srv.Lines()
	if err := c1.SendPattern(burst, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, srv.Addr, burst)
	if err := unix.Kill(srv.Pid(), unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := c1.ExpectPattern(burst, 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, srv.Trace())
	}
	if err := srv.Settle(from, true, replay.SettleWithin); err != nil {
		t.Fatal(err)
	}
	var turns [][]string
	read := 0
	for _, l := range tracing.Lines(srv.Trace())[from:] {
		if strings.HasPrefix(l, "ready ") {
			turns = append(turns, nil)
		}
		if len(turns) == 0 {
			t.Fatalf("a line before the first ready: %q\n%s", l, srv.Trace())
		}
		if strings.HasPrefix(l, "epoll_wait ") && read == burst {
			turns[len(turns)-1] = append(turns[len(turns)-1], l)
			return srv, turns
		}
		turns[len(turns)-1] = append(turns[len(turns)-1], l)
		if n, ok := readBytes(l, "c1"); ok {
			read += n
		}
	}
	t.Fatalf("the trace has no wait after reading %d of the %d bytes:\n%s", read, burst, srv.Trace())
	return nil, nil
}

// The trap in the short-read rule. c1 sends a line and FIN while the server is stopped, so that one
// event (IN|RDHUP) reports both, and SIGCONT lets the server go on. The read of the line is short,
// which would end the turn; had the loop stopped there, no event would come again (the FIN is old
// news), the server would never read EOF, and c1, which waits for the server to close after its echo,
// would wait forever: this test fails on the missing EOF. The loop reads on, because the event said
// RDHUP (the poller remembers it: watched.fin).
func TestFINWithTheLastBytesIsRead(t *testing.T) {
	srv, c1 := stoppedWithClient(t, "-echo")
	if err := c1.Send([]byte("bye\n"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c1.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// 08: CLOSE_WAIT, the FIN is in; 5: the 4 bytes and the FIN, which takes a sequence number.
	waitServerSocket(t, srv.Addr, "08", 5)
	if err := unix.Kill(srv.Pid(), unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := c1.Expect([]byte("bye\n"), 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, srv.Trace())
	}
	if err := c1.ExpectEOF(10 * time.Second); err != nil {
		t.Fatalf("%v: the server did not close after the echo\n%s", err, srv.Trace())
	}
}

// A client that is paused (its queue passed the high-water mark) stops being read before EAGAIN.
// Edge-triggered, nothing tells the loop about the bytes still waiting unless a MOD re-arms the client
// when it resumes (or the owed list remembers it). Here the whole burst is in the kernel before the
// server looks (SIGSTOP), and the client reads at once, so the queue drains in the turn that paused
// it: had the loop resumed c1 with neither, the rest of the burst would wait for ever (the client has
// nothing more to send). Every byte must come back.
func TestPausedClientIsReadAgainWhenItResumes(t *testing.T) {
	srv, c1 := stoppedWithClient(t, "-echo", "-highwater", "4096", "-lowwater", "1024")
	if err := c1.SendPattern(burst, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, srv.Addr, burst)
	if err := unix.Kill(srv.Pid(), unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := c1.ExpectPattern(burst, 10*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, srv.Trace())
	}
	if !strings.Contains(srv.Trace(), "\npause      c1 ") {
		t.Fatalf("c1 was never paused: the test proved nothing\n%s", srv.Trace())
	}
}

// stoppedWithClient starts the server with args, connects c1, and stops the server (SIGSTOP), so that
// what c1 sends next is all in the kernel before the server looks. The server is continued when the
// test ends, if the test has not done it.
func stoppedWithClient(t *testing.T, args ...string) (*replay.Server, *replay.Client) {
	t.Helper()
	s := tracetest.Open(t, ".", args...)
	tracetest.Do(t, s, "connect c1")
	srv := s.Server()
	if err := unix.Kill(srv.Pid(), unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(srv.Pid(), unix.SIGCONT) })
	if err := srv.WaitStopped(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	return srv, s.Client("c1")
}

// waitReceived waits until the server's socket for its one client holds n unread bytes (from
// /proc/net/tcp), so that the whole burst is in the kernel before the server looks.
func waitReceived(t *testing.T, serverAddr string, n int) {
	t.Helper()
	waitServerSocket(t, serverAddr, "01", n) // 01: ESTABLISHED
}

// waitServerSocket waits until the server's socket for its one client is in the given TCP state (as
// /proc/net/tcp writes it) and holds n unread bytes.
func waitServerSocket(t *testing.T, serverAddr, state string, n int) {
	t.Helper()
	_, portText, _ := strings.Cut(serverAddr, ":")
	port, _ := strconv.Atoi(portText)
	local := fmt.Sprintf("0100007F:%04X", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		table, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Skipf("needs /proc/net/tcp: %v", err)
		}
		got := 0
		for _, l := range strings.Split(string(table), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && f[1] == local && f[3] == state { // the server's side
				_, rx, _ := strings.Cut(f[4], ":")
				v, _ := strconv.ParseInt(rx, 16, 64)
				got += int(v)
			}
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's socket holds %d unread bytes after 10s, want %d", got, n)
		}
		time.Sleep(time.Millisecond) // polling the kernel's table: there is no event to wait on
	}
}

// Fairness, under a flood. c1 sends empty lines without pause (the room skips them: nobody is told, so
// the server only reads), and c2 asks /who. Both arrive while the server is stopped (SIGSTOP): c1's
// flood fills the server's socket with more than one turn's reads, c2's line comes after it, and the
// first wait after SIGCONT reports both. A naive drain would read c1 until the flood lets up, and c2
// would wait as long; with a budget the loop reads c1 within it, owes it the rest, and reads c2 in the
// same turn: c2's /who is answered while the flood goes on. The budget here is 1, not the default 4:
// a stopped server's socket takes about 128 KB (tcp_rmem's default) before the kernel closes the
// window, less than 2 reads of 64 KiB, so only a budget of 1 makes that turn certain to owe c1.
func TestFloodDoesNotStarveOthers(t *testing.T) {
	const budget = 1
	s := tracetest.Open(t, ".", "-readbudget", strconv.Itoa(budget))
	srv := s.Server()
	tracetest.Do(t, s, fmt.Sprintf(`connect c1
expect-line c1 %q
connect c2
expect-line c2 %q
expect-line c1 "* guest2 joined"`, fmt.Sprintf(welcome, "guest1"), fmt.Sprintf(welcome, "guest2")))
	c1, c2 := s.Client("c1"), s.Client("c2")
	if err := unix.Kill(srv.Pid(), unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(srv.Pid(), unix.SIGCONT) })
	if err := srv.WaitStopped(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	// The flood: 64 KiB of newlines at a time, until the test says stop. sent counts its bytes.
	var sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		chunk := bytes.Repeat([]byte{'\n'}, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			// A stopped server takes nothing: the send waits for SIGCONT (or the test's end).
			if err := c1.Send(chunk, 30*time.Second); err != nil {
				t.Errorf("flood: %v", err)
				return
			}
			sent.Add(int64(len(chunk)))
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	const backlog = budget*64<<10 + 1 // more than the budget's reads take: the turn cannot drain c1
	waitServerSockets(t, srv.Addr, func(rx []int) bool { return slices.ContainsFunc(rx, func(n int) bool { return n >= backlog }) })
	if err := c2.Send([]byte("/who\n"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitServerSockets(t, srv.Addr, func(rx []int) bool { return slices.Contains(rx, 5) })
	if err := unix.Kill(srv.Pid(), unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	line, err := c2.ReadLine(10 * time.Second)
	if err != nil || !strings.HasPrefix(line, "* in the room: ") {
		t.Fatalf("c2's /who, during the flood: %q, %v (c2 starved?)\n%s", line, err, lastLines(srv.Trace(), 20))
	}
	took := time.Since(start)
	// The flood goes on after c2 was answered: then it was going on while c2 waited.
	waitSent(t, &sent, sent.Load()+1<<20)

	// The turn that read c2: from the ready line that reported it to the next wait.
	lines := tracing.Lines(srv.Trace())
	begin := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "ready ") && strings.Contains(l, " c2=IN") })
	if begin < 0 {
		t.Fatalf("no ready line for c2:\n%s", lastLines(srv.Trace(), 20))
	}
	turn := lines[begin:]
	turn = turn[:slices.IndexFunc(turn, func(l string) bool { return strings.HasPrefix(l, "epoll_wait ") })+1]
	if !slicesContainsPrefix(turn, "owed       c1 ") || !slicesContainsPrefix(turn, "read       c2 5 bytes") {
		t.Errorf("the turn that reads c2 should read c1 within the budget and owe it:\n%s", strings.Join(turn, "\n"))
	}
	owed, overBudget, reads := 0, 0, 0
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "owed       c1 "):
			owed++
		case strings.HasPrefix(l, "read       c1 "):
			if reads++; reads > budget {
				overBudget++
			}
		case strings.HasPrefix(l, "epoll_wait "):
			reads = 0
		}
	}
	if overBudget > 0 {
		t.Errorf("%d reads from c1 past the budget of %d in a turn", overBudget, budget)
	}
	t.Logf("c2's /who answered %v after SIGCONT while c1 flooded (%d MiB in all); c1 owed a read %d times; c2's turn:\n%s",
		took.Round(time.Microsecond), sent.Load()>>20, owed, strings.Join(turn, "\n"))
}

// waitSent waits, at most 10 s, until the flood has sent n bytes.
func waitSent(t *testing.T, sent *atomic.Int64, n int64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); sent.Load() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("the flood stopped at %d bytes, short of %d", sent.Load(), n)
		}
		time.Sleep(time.Millisecond) // the flood's progress is a counter: there is no event to wait on
	}
}

// waitServerSockets waits until the unread byte counts of the server's established sockets (from
// /proc/net/tcp, one number per client) satisfy ok.
func waitServerSockets(t *testing.T, serverAddr string, ok func(rx []int) bool) {
	t.Helper()
	_, portText, _ := strings.Cut(serverAddr, ":")
	port, _ := strconv.Atoi(portText)
	local := fmt.Sprintf("0100007F:%04X", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		table, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Skipf("needs /proc/net/tcp: %v", err)
		}
		var rx []int
		for _, l := range strings.Split(string(table), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && f[1] == local && f[3] == "01" { // the server's side, ESTABLISHED
				_, q, _ := strings.Cut(f[4], ":")
				v, _ := strconv.ParseInt(q, 16, 64)
				rx = append(rx, int(v))
			}
		}
		if ok(rx) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server's sockets hold %v unread bytes after 10s\n%s", rx, table)
		}
		time.Sleep(time.Millisecond) // polling the kernel's table: there is no event to wait on
	}
}

// lastLines returns the last n lines of a trace, for a failure message.
func lastLines(trace string, n int) string {
	lines := tracing.Lines(trace)
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
