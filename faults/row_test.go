//go:build linux

package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"muxlab/tracing/replay"
)

// A row is one cell of the matrix being played: the server, the clients, and what the well-behaved
// ones must receive. Its methods are the steps every fault is made of.
type row struct {
	t        *testing.T
	tg       target
	s        *replay.Session
	srv      *replay.Server
	cell     *cell
	accepted int                // clients the server has accepted: the next is c<accepted+1> in its trace
	guests   int                // members who joined the room: the next is guest<guests+1>
	members  []*member          // connected clients (echo) or members of the room (chat), in order
	byName   map[string]*member // by client name
	baseline int                // the server's open fds before the faulty client came
	bin      string             // the step program, and its flags (set for a bare row, which starts no server)
	args     []string
	fig      *figures // what it measured, for the soak's report
	started  []string // the program and flags the row's server was started with
	// anonymous is a client's trace name that depends on the machine (how many clients it took to
	// get there): the matrix shows it as cN.
	anonymous string
}

// A member is one client, well-behaved (good: it reads and checks every line meant for it) or not.
type member struct {
	client string // its name in the scenario: g1, f, ...
	trace  string // its name in the server's trace: c1, c2, ...
	nick   string // its name in the room: guest1, ...
	good   bool
}

func newRow(t *testing.T, tg target, bin string, args []string, c *cell) *row {
	s, err := replay.Open(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if dir := os.Getenv("FAULTS_DUMP"); dir != "" && t.Failed() {
			os.WriteFile(filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".trace"), []byte(s.Transcript()), 0o644)
		}
		s.Close()
	})
	return &row{t: t, tg: tg, s: s, srv: s.Server(), cell: c, byName: map[string]*member{}, fig: &figures{}, started: append([]string{bin}, args...)}
}

// do plays scenario lines (fmt-formatted); on failure it shows the end of the transcript.
func (r *row) do(format string, args ...any) {
	r.t.Helper()
	if err := r.s.Do(fmt.Sprintf(format, args...)); err != nil {
		r.t.Fatalf("%v\ntranscript (end):\n%s", err, shortTranscript(r.s.Transcript()))
	}
}

// quote writes bytes as a scenario literal.
func quote(s string) string { return strconv.Quote(s) }

// welcome is the chat room's first line to a member.
func welcome(nick string) string {
	return "* welcome, " + nick + "; commands: /nick NAME, /who, /msg NAME TEXT, /quit"
}

// connect opens a client the server will accept, with scenario options (rcvbuf=N), and, on the chat
// room, lets it join: a good member reads its welcome, and every good member hears that it joined.
func (r *row) connect(client string, good bool, opts ...string) *member {
	r.t.Helper()
	r.do("connect %s %s", client, strings.Join(opts, " "))
	r.accepted++
	m := &member{client: client, trace: "c" + strconv.Itoa(r.accepted), good: good}
	if r.tg.chat {
		r.guests++
		m.nick = "guest" + strconv.Itoa(r.guests)
		if good {
			r.do("expect-line %s %s", client, quote(welcome(m.nick)))
		}
		r.tell(m, "* "+m.nick+" joined")
	}
	r.members = append(r.members, m)
	r.byName[client] = m
	return m
}

// tell has every good member but from expect line (chat only).
func (r *row) tell(from *member, line string) {
	r.t.Helper()
	if !r.tg.chat {
		return
	}
	for _, m := range r.members {
		if m != from && m.good {
			r.do("expect-line %s %s", m.client, quote(line))
		}
	}
}

// say sends one line from m. Echo: m, if good, reads it back. Chat: the others read it as m's.
func (r *row) say(m *member, text string) {
	r.t.Helper()
	r.sayAs(m, text+"\n", text)
}

// sayAs sends raw bytes, a line, from m; on the chat room the others read shown (the room cleans
// what it relays), while the echo sends back raw as it came.
func (r *row) sayAs(m *member, raw, shown string) {
	r.t.Helper()
	r.do("send %s %s", m.client, quote(raw))
	if r.tg.chat {
		r.tell(m, m.nick+": "+shown)
	} else if m.good {
		r.do("expect %s %s", m.client, quote(raw))
	}
}

// gone takes m out of the row: the server closed it, or will; on the chat room every good member
// hears how it left ("left", "left (connection reset)", ...).
func (r *row) gone(m *member, how string) {
	r.t.Helper()
	r.remove(m)
	r.tell(m, "* "+m.nick+" "+how)
}

// remove takes m out of the row, with nothing said.
func (r *row) remove(m *member) {
	for i, x := range r.members {
		if x == m {
			r.members = append(r.members[:i], r.members[i+1:]...)
			return
		}
	}
}

// setup connects the two well-behaved clients g1 and g2 and notes the server's fds.
func (r *row) setup() {
	r.t.Helper()
	r.connect("g1", true)
	r.connect("g2", true)
	r.baseline = r.srv.OpenFDs()
}

// idle checks for a busy loop: while nothing happens (g1 waits 300 ms for nothing), the server must
// use next to no CPU. The bound is generous (CPU time is counted in 10 ms ticks, and a loaded
// machine charges a sleeping process nothing); a spinning loop uses the whole 300 ms.
func (r *row) idle() {
	r.t.Helper()
	before := r.srv.CPUTime()
	r.do("expect-nothing g1 300ms")
	if used := r.srv.CPUTime() - before; used > 100*time.Millisecond {
		r.t.Errorf("the server used %v of CPU in 300 ms with nothing to do: it spins\ntrace (end):\n%s", used, shortTranscript(r.srv.Trace()))
	}
}

// noLeak checks that the server holds as many fds as before the faulty client came.
func (r *row) noLeak() {
	r.t.Helper()
	if err := r.srv.Settle(0, false, replay.SettleWithin); err != nil {
		r.t.Fatal(err)
	}
	if got := r.srv.OpenFDs(); got != r.baseline {
		r.t.Errorf("the server holds %d fds, %d before the faulty client came: %s", got, r.baseline, fdList(r.srv.Pid()))
	}
}

// served checks that g1 and g2 are still served, each receiving what is meant for it and nothing
// more.
func (r *row) served() {
	r.t.Helper()
	g1, g2 := r.byName["g1"], r.byName["g2"]
	r.say(g1, "g1 is still here")
	r.say(g2, "g2 is still here")
	r.do("expect-nothing g1 20ms\nexpect-nothing g2 20ms")
}

// evidence finds the first trace line that the pattern matches (fmt-formatted, then a regexp) and
// records it for the matrix: the trace must name what happened. Counts that vary from run to run
// are shown as N.
func (r *row) evidence(format string, args ...any) string {
	r.t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(format, args...))
	line := firstMatch(r.srv.Trace(), re)
	if line == "" {
		r.t.Errorf("no trace line matches %s\ntrace (end):\n%s", re, shortTranscript(r.srv.Trace()))
		return ""
	}
	shown := unquoted.ReplaceAllString(numbers.ReplaceAllString(line, "N $1"), "...(+N)")
	if r.anonymous != "" {
		shown = regexp.MustCompile(`\b`+r.anonymous+`\b`).ReplaceAllString(shown, "cN")
	}
	r.cell.evidence = append(r.cell.evidence, strings.Join(strings.Fields(shown), " "))
	return line
}

// waitTrace waits, up to within, until a trace line matches re; it returns the line. The server is
// watched, not slept on: each new line is a chance, and no new line before the bound is a failure.
func (r *row) waitTrace(re *regexp.Regexp, within time.Duration) string {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := r.srv.Lines()
		if line := firstMatch(r.srv.Trace(), re); line != "" {
			return line
		}
		left := time.Until(deadline)
		if left <= 0 {
			r.t.Fatalf("no trace line matched %s within %v\ntrace (end):\n%s", re, within, shortTranscript(r.srv.Trace()))
		}
		if err := r.srv.Settle(n, true, left); err != nil {
			r.t.Fatalf("waiting for %s: %v\ntrace (end):\n%s", re, err, shortTranscript(r.srv.Trace()))
		}
	}
}

// waitCount waits, up to within, until at least n trace lines match re.
func (r *row) waitCount(re *regexp.Regexp, n int, within time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(within)
	for {
		lines := r.srv.Lines()
		got := countMatches(r.srv.Trace(), re)
		if got >= n {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			r.t.Fatalf("%d trace lines match %s after %v, want %d\ntrace (end):\n%s", got, re, within, n, shortTranscript(r.srv.Trace()))
		}
		if err := r.srv.Settle(lines, true, left); err != nil {
			r.t.Fatalf("%d trace lines match %s, want %d: %v\ntrace (end):\n%s", got, re, n, err, shortTranscript(r.srv.Trace()))
		}
	}
}

// fdList describes the open fds of process pid, for a leak's failure message.
func fdList(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range ents {
		what, _ := os.Readlink(dir + "/" + e.Name())
		fmt.Fprintf(&b, "\n  %s -> %s", e.Name(), what)
	}
	return b.String()
}

// openFDs returns the fd numbers process pid has open.
func openFDs(t *testing.T, pid int) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	fds := map[int]bool{}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			fds[fd] = true
		}
	}
	return fds
}
