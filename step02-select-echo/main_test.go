package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

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
	baseline := tracetest.Sockets(t, s.Server())
	for i := 1; i <= 5; i++ {
		tracetest.Do(t, s, fmt.Sprintf("connect c%d\nsend c%d \"hi\\n\"\nexpect c%d \"hi\\n\"", i, i, i))
	}
	if got := tracetest.Sockets(t, s.Server()); got != baseline+5 {
		t.Fatalf("with 5 clients the server holds %d sockets, want %d", got, baseline+5)
	}
	tracetest.Do(t, s, "close c1\nreset c2\nshutdown c3\nclose c3 unnoticed\nclose c4\nreset c5")
	if got := tracetest.Sockets(t, s.Server()); got != baseline {
		t.Fatalf("after every client left the server holds %d sockets, want its baseline %d:\n%s", got, baseline, s.Transcript())
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
	tracetest.RaiseFDLimit(t, 2*clients+64)
	s := tracetest.Open(t, ".", "-trace=true")
	refused := tracetest.RefusedPastFDSetSize(t, s, clients)
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

// Issue 20, item 6: `-trace false` is a flag and a stray argument ("false"); Go's flag package stops
// at the first argument that is not a flag, so the -addr after it was ignored and the server listened
// on the default port with the trace on. Every step now refuses a stray argument with exit status 2.
func TestStrayArgumentIsRefused(t *testing.T) {
	for _, step := range []string{"../step01-blocking", ".", "../step03-write-queues", "../step04-chat", "../step05-epoll", "../step06-edge-triggered"} {
		out, err := exec.Command(tracetest.Binary(t, step), "-trace", "false", "-addr", "127.0.0.1:0").CombinedOutput()
		if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 || !strings.Contains(string(out), `unexpected argument "false"`) {
			t.Errorf("%s -trace false -addr 127.0.0.1:0: %v, %q: want exit status 2 and a line about the argument", step, err, out)
		}
	}
}
