package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// The seed's operation steps: both clients get their echo, and the trace is the golden one.
func TestSeedScenario(t *testing.T) {
	tracetest.Golden(t, "seed")
}

// B3 is kept on purpose in step02, and shown: while the server is blocked writing to c1, which does not
// read, c2 gets nothing; c2 is answered only after c1 reads. (The scenario's expect-nothing asserts the
// stall; step03 serves c2 at once.)
func TestB3_BlockingEchoStallsEveryone(t *testing.T) {
	res := tracetest.Golden(t, "stall")
	if !strings.Contains(res.Transcript, "<< c2 nothing for 300ms") {
		t.Fatal("the scenario no longer shows c2 waiting")
	}
}

// B1: a client's EOF is noticed, its socket leaves the watched list, and the loop goes back to sleep.
// With the seed's defect the socket would stay watched and readable forever: the replayer would never
// see the server asleep (it fails to settle), and the CPU time would climb.
func TestB1_EOFClosesAndStopsWatching(t *testing.T) {
	s := tracetest.Open(t, ".")
	tracetest.Do(t, s, "connect c1\nconnect c2\nclose c1")
	lines := strings.Split(strings.TrimSpace(s.Transcript()), "\n")
	tail := strings.Join(lines[len(lines)-3:], "\n")
	want := "read       c1 EOF\nclose      c1 (EOF)\nselect     read=[listener c2] write=[] except=[]"
	if tail != want {
		t.Fatalf("after c1 closed, the trace ends with\n%s\nwant\n%s", tail, want)
	}
	before := s.Server().CPUTime()
	tracetest.Do(t, s, "expect-nothing c2 500ms")
	if used := s.Server().CPUTime() - before; used > 100*time.Millisecond {
		t.Fatalf("the server used %v of CPU in 500ms with nothing to do: a busy loop", used)
	}
}

// B2: every client that leaves gives its fd back, whether it closed or reset.
func TestB2_ClientsThatLeaveGiveTheirFDsBack(t *testing.T) {
	s := tracetest.Open(t, ".")
	baseline := s.Server().OpenFDs()
	for i := 1; i <= 5; i++ {
		tracetest.Do(t, s, fmt.Sprintf("connect c%d\nsend c%d \"hi\\n\"\nexpect c%d \"hi\\n\"", i, i, i))
	}
	if got := s.Server().OpenFDs(); got != baseline+5 {
		t.Fatalf("with 5 clients the server holds %d fds, want %d", got, baseline+5)
	}
	tracetest.Do(t, s, "close c1\nreset c2\nshutdown c3\nclose c3 unnoticed\nclose c4\nreset c5")
	if got := s.Server().OpenFDs(); got != baseline {
		t.Fatalf("after every client left the server holds %d fds, want its baseline %d:\n%s", got, baseline, s.Transcript())
	}
	for _, want := range []string{"close      c1 (EOF)", "close      c2 (reset)", "close      c5 (reset)"} {
		if !strings.Contains(s.Transcript(), want+"\n") {
			t.Errorf("the trace does not say %q", want)
		}
	}
}

// B19: select can watch fds 0..1023 only. Clients whose fd would be 1024 or more are refused with a
// message and closed; everyone else is still served. The seed (Python) would raise ValueError and die.
func TestB19_ClientsPastFDSetSizeAreRefusedOthersServed(t *testing.T) {
	const clients = 1040
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < 2*clients+64 {
		t.Skipf("RLIMIT_NOFILE hard limit %d: too low to open %d connections", lim.Max, clients)
	}
	// Raise the soft limit for this process and, because children inherit it, for the server.
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	s := tracetest.Open(t, ".", "-trace=true")
	addr := s.Server().Addr
	var conns []*replay.Client
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	refused := 0
	for i := 1; i <= clients; i++ {
		c, err := replay.Dial(fmt.Sprintf("c%d", i), addr, 0)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns = append(conns, c)
		// One round trip each, so the server has accepted this client before the next connects.
		if err := c.Send([]byte("ping\n"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		line, err := c.ReadLine(10 * time.Second)
		switch {
		case err != nil:
			t.Fatalf("client %d: %v", i, err)
		case strings.HasPrefix(line, "server full"):
			refused++
			// Closed with our ping unread, the kernel sends RST rather than FIN: either ends it.
			if _, err := c.ReadLine(10 * time.Second); err != replay.ErrClosed && err != replay.ErrReset {
				t.Fatalf("client %d was refused but not closed: %v", i, err)
			}
		case line != "ping\n":
			t.Fatalf("client %d got %q, want its echo", i, line)
		case refused > 0:
			t.Fatalf("client %d was served after an earlier one was refused: fds are reused, but none was freed", i)
		}
	}
	if refused == 0 {
		t.Fatalf("all %d clients were served: no fd reached FD_SETSIZE, so the test proved nothing", clients)
	}
	// Everyone who was accepted below the limit is still served.
	for _, c := range conns[:10] {
		if err := c.Send([]byte("still there?\n"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := c.Expect([]byte("still there?\n"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Server().Settle(0, false, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(s.Server().Trace(), "(refused: fd past FD_SETSIZE)\n"); n != refused {
		t.Fatalf("the trace names %d refusals, the clients saw %d", n, refused)
	}
	t.Logf("%d clients, %d refused past FD_SETSIZE, the rest served", clients, refused)
}

// B4: the seed called select with a 2 s timeout, waking to print empty results. Here select has no
// timeout at all: read it from the kernel, where the server's thread sleeps in select and
// /proc/PID/task/TID/syscall shows the call's arguments (the fifth is the timeout pointer: 0 is none).
func TestB4_SelectHasNoTimeout(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("reads the select(2) arguments of linux/amd64 from /proc")
	}
	s := tracetest.Open(t, ".")
	tracetest.Do(t, s, "connect c1")
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", s.Server().Pid()))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		args := strings.Fields(string(b))
		// x/sys/unix implements Select with pselect6 (270); plain select is 23. Both take the timeout fifth.
		if len(args) > 5 && (args[0] == "270" || args[0] == "23") {
			if args[5] != "0x0" {
				t.Fatalf("select is called with a timeout (%s): the loop would wake with nothing to do", args[5])
			}
			return
		}
	}
	t.Fatal("no thread of the server is in select(2) while it is idle")
}
