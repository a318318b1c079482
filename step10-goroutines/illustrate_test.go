//go:build linux

package main

// The lesson's two looks under net: strace of the runtime's netpoller, and the scheduler's own report
// of where the goroutines are parked. Both are illustrations: which thread makes which system call,
// how many epoll_pwait calls a wake-up takes and which number a goroutine gets change from run to run,
// so the stored files (testdata/strace-echo.txt, testdata/schedtrace-room.txt) are rewritten only by
//
//	go test ./step10-goroutines -run Illustration -update
//
// and otherwise each test checks, on a fresh run and in the stored file alike, the lines the lesson
// points at.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"muxlab/tracing/replay"
	"muxlab/tracing/tracetest"
)

// strace -f of the echo while one client connects, sends "hello\n", gets it back and closes: the
// runtime registers the socket with its epoll instance (edge-triggered), a read says EAGAIN and the
// goroutine parks, epoll_pwait reports the socket readable, and the woken goroutine reads and writes.
func TestIllustrationStraceShowsTheNetpoller(t *testing.T) {
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace (apt-get install strace)")
	}
	bin := tracetest.Binary(t, ".")
	out := filepath.Join(t.TempDir(), "strace.out")
	cmd := exec.Command(strace, "-f", "-qq", "-o", out, "-e", "trace=epoll_ctl,epoll_pwait,accept4,read,write", bin, "-echo", "-addr", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := regexp.MustCompile(`listening on (\S+)`).FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
			if strings.Contains(sc.Text(), "ptrace") || strings.Contains(sc.Text(), "Operation not permitted") {
				addr <- ""
			}
		}
		close(addr)
	}()
	var a string
	select {
	case a = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatal("the server under strace did not say where it listens within 30 s")
	}
	if a == "" {
		t.Skip("strace cannot trace here (ptrace not permitted)")
	}
	c, err := net.Dial("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Send once c1's goroutine has tried a read and found nothing (it is parked): then the netpoller's
	// wake-up is in the excerpt, not only a read that found the bytes there already.
	waitStrace(t, out, regexp.MustCompile(`(?m)read\(c1, \.\.\., \d+\) = -1 EAGAIN$`))
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if _, err := c.Read(got); err != nil || string(got) != "hello\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	c.Close()
	// The server traces the close last: once its trace has said so, strace has every call before it.
	waitStrace(t, out, regexp.MustCompile(`trace: close c1 \(EOF\)`))
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	fresh := netpollerExcerpt(string(raw))
	golden := filepath.Join("testdata", "strace-echo.txt")
	if *tracetest.Update {
		if err := os.WriteFile(golden, []byte(straceHeader+fresh), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -run Illustration -update writes it)", err)
	}
	for _, text := range map[string]string{"this run": fresh, golden: string(stored)} {
		for _, want := range netpollerMarks {
			if !want.MatchString(text) {
				t.Errorf("%s: no line matches %s:\n%s", golden, want, text)
			}
		}
	}
}

// waitStrace waits, at most 10 s, until the excerpt of strace's output has a line that matches want.
func waitStrace(t *testing.T, out string, want *regexp.Regexp) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		text, _ := os.ReadFile(out)
		if want.MatchString(netpollerExcerpt(string(text))) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("strace's output has no line matching %s after 10 s:\n%s", want, text)
		}
		time.Sleep(10 * time.Millisecond) // a bounded wait for strace's file to catch up
	}
}

const straceHeader = `# strace -f of step10-goroutines -echo while one client sends "hello\n" and closes.
# Made by: go test ./step10-goroutines -run Illustration -update (an illustration: threads, counts and
# order change from run to run). Thread ids are T1, T2, ...; fds are named; the trace's own writes to
# stdout (fd 1) are shown as the trace line they wrote.
`

// The calls the lesson points at: the registration of c1, edge-triggered; a read that found nothing
// (the goroutine parks); a wait that reported c1 readable; the read and the echo's write.
var netpollerMarks = []*regexp.Regexp{
	regexp.MustCompile(`(?m)accept4\(listener, .*\) = c1$`),
	regexp.MustCompile(`(?m)epoll_ctl\(ep, EPOLL_CTL_ADD, c1, \{events=EPOLLIN\|EPOLLOUT\|EPOLLRDHUP\|EPOLLET`),
	regexp.MustCompile(`(?m)read\(c1, .*\) = -1 EAGAIN`),
	regexp.MustCompile(`(?m)epoll_pwait\(ep, \[.*EPOLLIN.*\], .*\) = [1-9]`),
	regexp.MustCompile(`(?m)read\(c1, "hello\\n", \d+\) = 6$`),
	regexp.MustCompile(`(?m)write\(c1, "hello\\n", 6\) = 6$`),
}

var (
	straceLine = regexp.MustCompile(`^(\d+) +(.*)$`)
	resumed    = regexp.MustCompile(`^<\.\.\. (\w+) resumed>(.*)$`)
	fdArg      = regexp.MustCompile(`^(\w+)\((\d+)`)
	accepted   = regexp.MustCompile(`^accept4\((\d+),.*\) = (\d+)$`)
	epollOf    = regexp.MustCompile(`^epoll_(?:ctl|pwait)\((\d+)`)
	ctlTarget  = regexp.MustCompile(`^(epoll_ctl\(ep, EPOLL_CTL_\w+, )(\d+)`)
	userData   = regexp.MustCompile(`, data=\{[^}]*\}`)
	pointer    = regexp.MustCompile(`0x[0-9a-f]+`)
	traceWrite = regexp.MustCompile(`^write\(stdout, "(.*?)(\\n)?"(?:\.\.\.)?, \d+\) += \d+$`)
	port       = regexp.MustCompile(`sin_port=htons\(\d+\)`)
	result     = regexp.MustCompile(`\) +=( |$)`) // strace pads a call's result into a column
)

// netpollerExcerpt turns strace -f's output into the lesson's excerpt: each call on one line (strace
// splits a call another thread interrupts into "<unfinished ...>" and "<... resumed>"), from the
// accept of c1 to its close, with thread ids and fd numbers named.
func netpollerExcerpt(out string) string {
	var calls []string // "TID call"
	pending := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		m := straceLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		tid, call := m[1], m[2]
		if head, ok := strings.CutSuffix(call, " <unfinished ...>"); ok {
			pending[tid] = head
			continue
		}
		if r := resumed.FindStringSubmatch(call); r != nil {
			call = pending[tid] + r[2]
			delete(pending, tid)
		}
		calls = append(calls, tid+" "+call)
	}
	// Name the fds: the listener is the fd accept4 is called on, c1 what it returns, ep the fd of the
	// epoll calls; the others (the runtime's eventfd) keep their numbers.
	names := map[string]string{"1": "stdout"}
	for _, c := range calls {
		call := c[strings.IndexByte(c, ' ')+1:]
		if m := accepted.FindStringSubmatch(call); m != nil && names[m[2]] == "" {
			names[m[1]], names[m[2]] = "listener", "c1"
		}
		if m := epollOf.FindStringSubmatch(call); m != nil {
			names[m[1]] = "ep"
		}
	}
	tids := map[string]string{}
	var b strings.Builder
	started := false
	for _, c := range calls {
		tid, call, _ := strings.Cut(c, " ")
		if !started && !strings.HasPrefix(call, "accept4(") {
			continue
		}
		if strings.HasPrefix(call, "accept4(") && strings.HasSuffix(call, "EAGAIN (Resource temporarily unavailable)") && !started {
			continue
		}
		started = true
		if tids[tid] == "" {
			tids[tid] = "T" + strconv.Itoa(len(tids)+1)
		}
		if m := fdArg.FindStringSubmatch(call); m != nil && names[m[2]] != "" {
			call = m[1] + "(" + names[m[2]] + call[len(m[0]):]
		}
		if i := strings.LastIndex(call, ") = "); i >= 0 && strings.HasPrefix(call, "accept4(") {
			if n := strings.TrimSpace(call[i+4:]); names[n] != "" {
				call = call[:i+4] + names[n]
			}
		}
		if m := ctlTarget.FindStringSubmatch(call); m != nil && names[m[2]] != "" {
			call = m[1] + names[m[2]] + call[len(m[0]):]
		}
		call = userData.ReplaceAllString(call, "")
		call = pointer.ReplaceAllString(call, "...")
		call = port.ReplaceAllString(call, "sin_port=htons(...)")
		call = result.ReplaceAllString(call, ") =$1")
		call = strings.ReplaceAll(call, " (Resource temporarily unavailable)", "")
		if m := traceWrite.FindStringSubmatch(call); m != nil && strings.HasPrefix(call, "write(stdout") {
			call = "write(stdout) trace: " + strings.Join(strings.Fields(m[1]), " ")
		}
		fmt.Fprintf(&b, "%-3s %s\n", tids[tid], call)
		if strings.Contains(call, "trace: close c1 (EOF)") {
			break
		}
	}
	return b.String()
}

// The scheduler's own report (GODEBUG=schedtrace=20,scheddetail=1) with three members in the room:
// four goroutines parked in "IO wait" (the accept loop and each member's reader, parked on their
// sockets by the netpoller), three in "sync.Cond.Wait" (the writers, with nothing to send), and no
// thread running any of them.
func TestIllustrationSchedulerShowsParkedGoroutines(t *testing.T) {
	bin := tracetest.Binary(t, ".") // before GODEBUG is set: go build would report on itself
	t.Setenv("GODEBUG", "schedtrace=20,scheddetail=1")
	s, err := replay.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tracetest.Do(t, s, "connect c1\nconnect c2\nconnect c3\nsend c1 \"hello\\n\"")
	report, parked := schedReport(t, s.Server())
	if parked["IO wait"] != 4 || parked["sync.Cond.Wait"] != 3 {
		t.Errorf("goroutines by what they wait for: %v; want 4 in IO wait and 3 in sync.Cond.Wait\n%s", parked, report)
	}
	golden := filepath.Join("testdata", "schedtrace-room.txt")
	if *tracetest.Update {
		if err := os.WriteFile(golden, []byte(schedHeader+report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -run Illustration -update writes it)", err)
	}
	if n := len(parkedG.FindAllString(string(stored), -1)); n < 7 {
		t.Errorf("%s shows %d parked goroutines, want the 7 of the room at least", golden, n)
	}
}

const schedHeader = `# GODEBUG=schedtrace=20,scheddetail=1 of step10-goroutines with three members, c1 having said hello.
# Made by: go test ./step10-goroutines -run Illustration -update (an illustration: goroutine numbers
# and timings change from run to run). One report: the Ps and the Ms (threads) left out, then every
# goroutine, its status (4: waiting) and what it waits for.
`

// schedReport returns the server's next whole scheduler report, its header and goroutine lines only,
// and how many goroutines are parked, by what they wait for.
func schedReport(t *testing.T, srv *replay.Server) (string, map[string]int) {
	t.Helper()
	block := nextSchedBlock(t, srv)
	var b strings.Builder
	for _, l := range strings.Split(block, "\n") {
		if strings.HasPrefix(l, "SCHED ") || regexp.MustCompile(`^\s+G\d+:`).MatchString(l) {
			b.WriteString(l + "\n")
		}
	}
	parked := map[string]int{}
	for _, m := range parkedG.FindAllStringSubmatch(block, -1) {
		parked[m[1]]++
	}
	return b.String(), parked
}
