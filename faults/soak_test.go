//go:build linux

package faults

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing/replay"
)

var (
	soakFor  = flag.Duration("soak", 0, "run the soak this long against each chat server (default: a short run for CI)")
	soakSeed = flag.Uint64("seed", 0, "the soak's random seed (default: from the clock); the seed is printed, to replay a run's choices")
)

// shortSoak is how long the soak runs against each server without -soak: long enough for a few
// hundred clients, short enough for CI.
const shortSoak = 2 * time.Second

// soakArgs are the flags the soak adds to each server's.
var soakArgs = []string{"-trace=false", "-sndbuf", "4096", "-maxqueue", "16384"}

// The soak's limits. They bound what the room holds at once, not what goes through it.
const (
	maxGood   = 8   // well-behaved members at once, at most
	minGood   = 3   // and at least (the observer among them)
	maxFaulty = 100 // misbehaving clients at once
	maxLife   = 400 // a misbehaving client leaves within this many actions of the run
	// maxLag is how many lines a well-behaved member may be behind before the talkers wait for it.
	// What it has still to receive is then a few kilobytes (a line is about 100 bytes, one in 20
	// about 1000), far from -maxqueue: a member who reads is never put out.
	maxLag = 32
	// maxRSS bounds the server's peak resident memory (VmHWM) over a whole run. A queue is meant to
	// be bounded by -maxqueue (16 KiB here) per member, a hundred members hold a few MiB, and the Go
	// runtime needs a few more: 64 MiB is far above that.
	maxRSS = 64 << 20
	// soakWait bounds every wait of the soak for the server: a room that stops moving fails the run.
	soakWait = 10 * time.Second
)

// TestSoak runs random joins, chats, slow readers, resets and quits against each chat server at once
// (step04, step05 level-triggered, step06 edge-triggered): a few hundred clients in a short run, many more with
// -soak 60s. Well-behaved members check every line they receive as it arrives; at the end every one
// must have received every line that another well-behaved member sent while it was in the room,
// exactly once and in order, the room must have announced every departure exactly once, and the
// server must be idle, hold no more fds than it did with no client, and have stayed within maxRSS.
//
// The random choices come from one seed, printed first: go test ./faults -run Soak -seed N replays
// them (what the server does in between depends on timing, which is the point of a soak).
func TestSoak(t *testing.T) {
	d := *soakFor
	if d <= 0 {
		d = shortSoak
	}
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d, %v per server (go test ./faults -run Soak -seed %d -soak %v repeats these choices)", seed, d, seed, d)
	for _, tg := range targets {
		if !tg.chat {
			continue
		}
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			bin, args, missing := prepare(t, tg)
			if missing != "" {
				t.Skip(string(missing))
			}
			// No trace: a soak's would be hundreds of megabytes, and its lines prove nothing the
			// clients do not check themselves. Small buffers and a small queue limit (the later
			// flag wins) let a slow reader reach the limit within its life, so that some are put out.
			srv, err := replay.Start(bin, append(slices.Clone(args), soakArgs...)...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(srv.Kill)
			s := newSoak(t, tg.name, srv, seed)
			s.loops = loopsOf(tg)
			s.run(d)
		})
	}
}

// A soak is one run against one server. Its driver (the test's goroutine) makes every choice and
// every move of the clients but their reading, which each reading client does in a goroutine of its
// own.
type soak struct {
	t     *testing.T
	name  string // the server's column in the matrix
	loops int    // the server's event loops (step09 has several)
	srv   *replay.Server
	rng   *rand.Rand

	// lines counts the well-behaved members' lines: the next one's index. Lines are numbered in the
	// order the driver sends them, so "sent while B was in the room" is a range of indexes.
	lines    atomic.Int64
	senders  []int // by line index: who sent it (driver only)
	nicksMu  sync.Mutex
	nicks    map[int]string // by member id: its name in the room, known before its first line
	progress chan struct{}  // a reading member received something

	observer *soakMember   // the first member: it stays to the end and counts who came and went
	good     []*soakMember // well-behaved members in the room now, the observer first
	faulty   []*soakMember // misbehaving clients connected now
	gone     []*soakMember // members whose reading has to be checked at the end
	step     int           // actions so far
	nextID   int

	baseline map[string]int // the server's fds by kind, with no client
	stats    struct {
		clients, goodLines, faultyLines, late, lateServed int
	}
}

func newSoak(t *testing.T, name string, srv *replay.Server, seed uint64) *soak {
	return &soak{
		t:        t,
		name:     name,
		srv:      srv,
		rng:      rand.New(rand.NewPCG(seed, 0x50a6)),
		nicks:    map[int]string{},
		progress: make(chan struct{}, 1),
	}
}

// The kinds of misbehaving client. Each connects with a small receive buffer and never reads until
// it leaves, so the room's queue for it grows (a slow reader), and each leaves its own way.
const (
	kSilent    = "silent"    // says nothing; leaves with a close (its unread data makes it a reset) or a reset
	kResetter  = "resetter"  // sends half a line, then resets
	kGarbage   = "garbage"   // sends bad lines: not UTF-8, escapes, empty, too long, commands; then closes
	kHalfClose = "halfclose" // sends a last line with no newline and SHUT_WR at once, closes later
	kQuitter   = "quitter"   // sends /quit and closes without reading the answer
	kLate      = "late"      // a slow reader that catches up: at the end it sends /quit and reads it all
)

var kinds = []string{kSilent, kResetter, kGarbage, kHalfClose, kQuitter, kLate}

// A soakMember is one client of the soak.
type soakMember struct {
	id   int
	kind string // "good", or one of kinds
	nick string
	conn *net.TCPConn
	in   *bufio.Reader
	// until is the action after which a misbehaving client leaves.
	until int

	// The window: the member must receive every line from index joinIdx up to quitIdx (excluded)
	// that it did not send. The driver sets them; the reader reads joinAt and quitAt.
	joinIdx, quitIdx int
	joinAt, quitAt   atomic.Int64
	own              int // lines it sent (all inside its window)

	// What the reader found. inWindow is read by the driver while the reader runs; the rest only
	// after done is closed.
	inWindow atomic.Int64 // lines in the window received
	received atomic.Int64 // lines of any kind received
	extra    int          // well-behaved lines received from outside the window (allowed, once)
	last     map[int]int  // by sender: the index of its last line received (they must increase)
	bye      bool         // "* bye" arrived: the room let it leave and sent it everything first
	cut      string       // the start of a line, when the connection ended inside one
	end      error        // how the reading ended (io.EOF: the server closed the connection)
	errs     []string
	done     chan struct{}
	welcome  chan struct{} // closed by the reader when the welcome, with the member's name, arrived

	// The observer's count of the room's notices, and how many members are in the room now.
	joined, departed map[string]int
	present          atomic.Int64
	putOut           int
}

// goodText is the line that member id sends as line idx: its id and index, and a filler of a length
// that varies with idx (one line in 20 is long), so the line can be checked by anyone who receives it.
func goodText(id, idx int) string {
	n := idx * 31 % 150
	if idx%20 == 7 {
		n = 1000
	}
	return fmt.Sprintf("g%d %d %s", id, idx, strings.Repeat(string(rune('a'+idx%26)), n))
}

// badLines are what the garbage kind sends. Each starts with "bad ", which survives the room's
// cleaning, so no bad line can pass for a well-behaved one.
var badLines = []string{
	"bad caf\xe9 \xff\xfe not UTF-8\n",
	"bad \x1b[2J\x1b[31mred\x1b[0m \u009b1m\a\b \rover\n",
	"\n", "   \r\n", "\t\n",
	"bad " + strings.Repeat("x", 3000) + "\n", // over -maxline: refused
	"/who\n", "/nick\n", "/msg nobody-here bad\n", "/bogus bad\n", "/msg guest1 bad private\n",
	"bad two\nbad lines in one write\n",
	"bad half a line, ",
	"the other half\n",
}

// run plays random actions for d, then lets every client leave and checks what everyone received.
func (s *soak) run(d time.Duration) {
	start := time.Now()
	s.observer = s.joinGood()
	// The baseline: the fds the server holds with its first members' sockets in its loops, less
	// those sockets. By then every loop has opened its own (its epoll instance, its spare fd, ...):
	// the server says where it listens before it does, and a loop per core deals its members round
	// the loops, so each loop has welcomed one.
	for len(s.good) < max(minGood, s.loops) {
		s.joinGood()
	}
	s.baseline = fdKinds(s.t, s.srv.Pid())
	s.baseline["socket"] -= len(s.good)
	for time.Since(start) < d && !s.t.Failed() {
		s.act()
	}
	s.finish()
	rss := statusBytes(s.t, s.srv.Pid(), "VmHWM")
	if rss > maxRSS {
		s.t.Errorf("the server's peak resident memory was %d MiB (bound %d MiB)", rss>>20, maxRSS>>20)
	}
	var delivered int64
	for _, m := range s.gone {
		delivered += m.inWindow.Load()
	}
	s.t.Logf("%s, %v: %d clients (%d late readers, %d of them served to the end; %d put out), %d actions, %d well-behaved lines (%d deliveries checked), %d bad lines; peak RSS %d MiB",
		s.name, time.Since(start).Round(time.Millisecond), s.stats.clients, s.stats.late, s.stats.lateServed, s.observer.putOut,
		s.step, s.stats.goodLines, delivered, s.stats.faultyLines, rss>>20)
}

// act makes one random move.
func (s *soak) act() {
	s.step++
	// Misbehaving clients whose time has come leave first.
	for i := 0; i < len(s.faulty); {
		if f := s.faulty[i]; s.step >= f.until {
			s.faulty = slices.Delete(s.faulty, i, i+1)
			s.leaveFaulty(f)
			continue
		}
		i++
	}
	switch n := s.rng.IntN(100); {
	case n < 55:
		s.chat(s.good[s.rng.IntN(len(s.good))])
	case n < 70:
		if len(s.faulty) < maxFaulty {
			s.joinFaulty(kinds[s.rng.IntN(len(kinds))])
		}
	case n < 92:
		if len(s.faulty) > 0 {
			s.misbehave(s.faulty[s.rng.IntN(len(s.faulty))])
		}
	case n < 96:
		if len(s.good) < maxGood {
			s.joinGood()
		}
	default:
		if len(s.good) > minGood {
			s.quitGood(s.good[1+s.rng.IntN(len(s.good)-1)]) // never the observer
		}
	}
}

// dial connects a client; rcvbuf > 0 shrinks its receive buffer first, so that a client that does
// not read fills it, and then the server's, soon.
func (s *soak) dial(rcvbuf int) *net.TCPConn {
	s.t.Helper()
	d := net.Dialer{Timeout: soakWait, Control: func(_, _ string, rc syscall.RawConn) error {
		var err error
		if rcvbuf > 0 {
			rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf) })
		}
		return err
	}}
	c, err := d.Dial("tcp", s.srv.Addr)
	if err != nil {
		s.t.Fatalf("client %d: %v", s.stats.clients+1, err)
	}
	s.stats.clients++
	return c.(*net.TCPConn)
}

func (s *soak) newMember(kind string, conn *net.TCPConn) *soakMember {
	s.nextID++
	m := &soakMember{id: s.nextID, kind: kind, conn: conn, in: bufio.NewReader(conn), last: map[int]int{},
		done: make(chan struct{}), welcome: make(chan struct{})}
	m.joinAt.Store(math.MaxInt64)
	m.quitAt.Store(math.MaxInt64)
	return m
}

// joinGood connects a well-behaved member and waits for its welcome: from then on the room counts
// it in, so every line sent after that is one it must receive.
func (s *soak) joinGood() *soakMember {
	s.t.Helper()
	m := s.newMember("good", s.dial(0))
	if s.observer == nil {
		m.joined, m.departed = map[string]int{}, map[string]int{}
	}
	go s.read(m)
	select {
	case <-m.welcome: // the reader has set m.nick
	case <-m.done:
		s.t.Fatalf("a new member was not welcomed: %v %q", m.end, m.errs)
	case <-time.After(soakWait):
		s.t.Fatalf("a new member was not welcomed within %v", soakWait)
	}
	s.setNick(m)
	m.joinIdx = int(s.lines.Load())
	m.joinAt.Store(int64(m.joinIdx))
	s.good = append(s.good, m)
	return m
}

func (s *soak) setNick(m *soakMember) {
	s.nicksMu.Lock()
	defer s.nicksMu.Unlock()
	s.nicks[m.id] = m.nick
}

func (s *soak) nickOf(id int) string {
	s.nicksMu.Lock()
	defer s.nicksMu.Unlock()
	return s.nicks[id]
}

// chat sends one, several (in one write) or one line cut in two writes from member m, once no
// well-behaved member is more than maxLag lines behind.
func (s *soak) chat(m *soakMember) {
	s.t.Helper()
	s.waitFor("the well-behaved members to catch up", func() bool { return s.maxLag() <= maxLag })
	n := 1
	if s.rng.IntN(5) == 0 {
		n = 2 + s.rng.IntN(4)
	}
	var b strings.Builder
	for range n {
		idx := int(s.lines.Load())
		s.senders = append(s.senders, m.id)
		s.lines.Add(1)
		m.own++
		s.stats.goodLines++
		b.WriteString(goodText(m.id, idx) + "\n")
	}
	p := []byte(b.String())
	if n == 1 && s.rng.IntN(8) == 0 {
		cut := 1 + s.rng.IntN(len(p)-1)
		s.write(m, p[:cut])
		p = p[cut:]
	}
	s.write(m, p)
}

// write sends p from a well-behaved member: the server reads every member, so it cannot block long.
func (s *soak) write(m *soakMember, p []byte) {
	s.t.Helper()
	m.conn.SetWriteDeadline(time.Now().Add(soakWait))
	if _, err := m.conn.Write(p); err != nil {
		s.t.Fatalf("%s (a well-behaved member) could not send: %v", m.nick, err)
	}
}

// lag is how many lines member m has still to receive.
func (m *soakMember) lag(sent int) int64 {
	return int64(sent-m.joinIdx-m.own) - m.inWindow.Load()
}

// maxLag is the lag of the well-behaved member furthest behind.
func (s *soak) maxLag() int64 {
	var most int64
	for _, m := range s.good {
		most = max(most, m.lag(int(s.lines.Load())))
	}
	return most
}

// waitFor waits until cond holds, waking whenever a reading member receives something. It fails the
// test when nothing arrives for soakWait, or when a well-behaved member's connection ends: either way
// the room stopped serving someone who did nothing wrong.
func (s *soak) waitFor(what string, cond func() bool) {
	s.t.Helper()
	for !cond() {
		for _, m := range s.good {
			select {
			case <-m.done:
				s.t.Fatalf("%s, a well-behaved member, lost its connection (%v) while waiting for %s; its findings: %q", m.nick, m.end, what, m.errs)
			default:
			}
		}
		select {
		case <-s.progress:
		case <-time.After(soakWait):
			var lags []string
			for _, m := range s.good {
				lags = append(lags, fmt.Sprintf("%s %d behind", m.nick, m.lag(int(s.lines.Load()))))
			}
			s.t.Fatalf("nothing arrived for %v while waiting for %s: %s", soakWait, what, strings.Join(lags, ", "))
		}
	}
}

// quitGood has m leave the well-behaved way, once it has received every line so far: /quit, then it
// reads the room's "* bye" and the end of the connection.
func (s *soak) quitGood(m *soakMember) {
	s.t.Helper()
	s.waitFor(m.nick+" to catch up before it quits", func() bool { return m.lag(int(s.lines.Load())) == 0 })
	s.good = slices.DeleteFunc(s.good, func(x *soakMember) bool { return x == m })
	s.quit(m)
}

// quit closes m's window at the current line and sends /quit; m's reader reads to the end.
func (s *soak) quit(m *soakMember) {
	m.quitIdx = int(s.lines.Load())
	m.quitAt.Store(int64(m.quitIdx))
	s.gone = append(s.gone, m)
	m.conn.SetWriteDeadline(time.Now().Add(soakWait))
	if _, err := m.conn.Write([]byte("/quit\n")); err != nil && m.kind == "good" {
		s.t.Fatalf("%s could not send /quit: %v", m.nick, err)
	}
}

// joinFaulty connects a misbehaving client of kind k. Only a late reader waits for its welcome (it
// must know from which line on the room counts it in); the others connect and go on.
func (s *soak) joinFaulty(k string) {
	s.t.Helper()
	f := s.newMember(k, s.dial(4096))
	f.until = s.step + 1 + s.rng.IntN(maxLife)
	s.faulty = append(s.faulty, f)
	switch k {
	case kLate:
		s.stats.late++
		f.conn.SetReadDeadline(time.Now().Add(soakWait))
		line, err := f.in.ReadString('\n')
		nick, ok := strings.CutPrefix(line, "* welcome, ")
		if !ok || err != nil {
			s.t.Fatalf("a late reader got %q, %v, want its welcome", line, err)
		}
		f.nick, _, _ = strings.Cut(nick, ";")
		f.joinIdx = int(s.lines.Load())
		f.joinAt.Store(int64(f.joinIdx))
		f.received.Add(1)
	case kResetter:
		s.send(f, "bad half a line that never ends")
	case kHalfClose:
		s.send(f, "bad last words, no newline")
		f.conn.CloseWrite()
	}
}

// misbehave has f do what its kind does while it is in the room.
func (s *soak) misbehave(f *soakMember) {
	switch f.kind {
	case kGarbage:
		s.send(f, badLines[s.rng.IntN(len(badLines))])
	case kSilent, kLate:
		if s.rng.IntN(4) == 0 {
			s.send(f, "bad a slow reader says something\n")
		}
	}
}

// send writes from a misbehaving client; errors are its own business (the room may have put it
// out). A client whose buffers the server fills is never blocked: the server reads every member.
func (s *soak) send(f *soakMember, text string) {
	f.conn.SetWriteDeadline(time.Now().Add(soakWait))
	f.conn.Write([]byte(text))
	s.stats.faultyLines++
}

// leaveFaulty has f leave its kind's way.
func (s *soak) leaveFaulty(f *soakMember) {
	switch f.kind {
	case kLate:
		if s.loops > 1 {
			// With a loop per core, every well-behaved member having a line says that the server
			// has read it, not that f's own loop has taken it from its inbox: f's /quit could come
			// first, and f would rightly miss it (a member is owed what reaches its loop while it
			// is there). So here f catches up before it quits, unless the room puts it out.
			go s.read(f)
			s.waitFor(f.nick+" (late) to catch up before it quits", func() bool {
				return f.lag(int(s.lines.Load())) == 0 || closed(f.done)
			})
			s.quit(f)
			return
		}
		// Everything sent so far must have reached the server (and so f's queue) before f quits:
		// once every well-behaved member has it, the server has read it.
		s.waitFor("every member to catch up before a late reader quits", func() bool { return s.maxLag() == 0 })
		s.quit(f)
		go s.read(f)
		return
	case kQuitter:
		s.send(f, "/quit\n")
	case kResetter:
		f.conn.SetLinger(0)
	case kSilent:
		if s.rng.IntN(2) == 0 {
			f.conn.SetLinger(0)
		}
	}
	f.conn.Close()
}

// finish lets everyone leave, then checks what they received, that the room announced every
// departure, that the server is idle (no spin) and holds the fds it held with no client.
func (s *soak) finish() {
	s.t.Helper()
	for _, f := range s.faulty {
		s.leaveFaulty(f)
	}
	s.faulty = nil
	s.waitFor("every member to catch up", func() bool { return s.maxLag() == 0 })
	for _, m := range s.good[1:] {
		s.quit(m)
	}
	s.good = s.good[:1]
	for _, m := range s.gone {
		s.waitDone(m)
	}
	s.waitFor("the room to announce that every member left", func() bool { return s.observer.present.Load() == 0 })
	// Idle: nobody is left but the observer, and for 300 ms nothing happens.
	cpu, got := s.srv.CPUTime(), s.observer.received.Load()
	select {
	case <-s.observer.done:
	case <-time.After(300 * time.Millisecond):
	}
	if n := s.observer.received.Load(); n != got {
		s.t.Errorf("the observer received %d lines in the quiet time at the end", n-got)
	}
	if used := s.srv.CPUTime() - cpu; used > 100*time.Millisecond {
		s.t.Errorf("the server used %v of CPU in 300 ms with one idle member: it spins", used)
	}
	s.quit(s.observer)
	s.good = nil
	s.waitDone(s.observer)
	for _, m := range s.gone {
		s.check(m)
	}
	s.checkNotices()
	s.checkFDs()
}

// waitDone waits for m's reader to reach the end of the connection.
func (s *soak) waitDone(m *soakMember) {
	s.t.Helper()
	select {
	case <-m.done:
	case <-time.After(3 * soakWait):
		m.conn.Close()
		<-m.done
		s.t.Errorf("%s (%s) was not let go within %v of its /quit", m.nick, m.kind, 3*soakWait)
	}
}

// read reads m's lines until the connection ends, checking each as it arrives.
func (s *soak) read(m *soakMember) {
	defer s.nudge() // last: a wait on "caught up, or gone" wakes for the end too
	defer close(m.done)
	defer m.conn.Close()
	if m.kind != "good" {
		// A late reader reads only at the end: it has a bound, in case the server never lets it go.
		m.conn.SetReadDeadline(time.Now().Add(3 * soakWait))
	}
	for {
		line, err := m.in.ReadString('\n')
		if err != nil {
			m.cut, m.end = line, err
			return
		}
		m.received.Add(1)
		s.take(m, strings.TrimSuffix(line, "\n"))
		s.nudge()
	}
}

// nudge wakes waitFor, if it waits.
func (s *soak) nudge() {
	select {
	case s.progress <- struct{}{}:
	default:
	}
}

var notice = regexp.MustCompile(`^\* (\S+) (joined|left|left \(.+\)|was put out: too slow to read)$`)

// take checks one line m received.
func (s *soak) take(m *soakMember, line string) {
	switch {
	case m.nick == "" && m.kind == "good":
		nick, ok := strings.CutPrefix(line, "* welcome, ")
		nick, _, _ = strings.Cut(nick, ";")
		if !ok {
			m.errs = append(m.errs, fmt.Sprintf("first line %q, want a welcome", line))
		}
		m.nick = nick
		close(m.welcome)
		return
	case line == "* bye":
		m.bye = true
		return
	case strings.HasPrefix(line, "* "):
		if m.joined == nil {
			return // notices are the observer's to count
		}
		n := notice.FindStringSubmatch(line)
		switch {
		case n == nil:
			m.errs = append(m.errs, fmt.Sprintf("unexpected notice %q", line))
		case n[2] == "joined":
			m.joined[n[1]]++
			m.present.Add(1)
		default:
			if n[2] == "was put out: too slow to read" {
				m.putOut++
			}
			m.departed[n[1]]++
			m.present.Add(-1)
		}
		return
	}
	nick, text, ok := strings.Cut(line, ": ")
	if !ok {
		m.errs = append(m.errs, fmt.Sprintf("unexpected line %q", line))
		return
	}
	f := strings.SplitN(text, " ", 3)
	if len(f) < 2 || !strings.HasPrefix(f[0], "g") {
		return // a misbehaving client's line, or a private message: nobody's business here
	}
	id, err1 := strconv.Atoi(f[0][1:])
	idx, err2 := strconv.Atoi(f[1])
	switch {
	case err1 != nil || err2 != nil || text != goodText(id, idx):
		m.errs = append(m.errs, fmt.Sprintf("garbled line %q", line))
	case id == m.id:
		m.errs = append(m.errs, fmt.Sprintf("got its own line back: %q", line))
	case idx >= int(s.lines.Load()):
		m.errs = append(m.errs, fmt.Sprintf("got a line never sent: %q", line))
	case nick != s.nickOf(id):
		m.errs = append(m.errs, fmt.Sprintf("line %d under the name %s, sent by %s", idx, nick, s.nickOf(id)))
	case idx <= m.lastFrom(id):
		m.errs = append(m.errs, fmt.Sprintf("line %d from %s after its line %d: repeated or out of order", idx, nick, m.last[id]))
	default:
		m.last[id] = idx
		if int64(idx) >= m.joinAt.Load() && int64(idx) < m.quitAt.Load() {
			m.inWindow.Add(1)
		} else {
			m.extra++
		}
	}
}

func (m *soakMember) lastFrom(id int) int {
	if i, ok := m.last[id]; ok {
		return i
	}
	return -1
}

// check looks at what a member that left received: no finding from its reader, the end of the
// connection after "* bye", and every line of its window exactly once (the reader has checked the
// order, so a count is enough). A late reader the room put out has no "* bye" and may have missed
// lines; what it did receive was checked all the same.
func (s *soak) check(m *soakMember) {
	s.t.Helper()
	for _, e := range m.errs {
		s.t.Errorf("%s (%s): %s", m.nick, m.kind, e)
	}
	// A member put out may have been in the middle of a line: the room wrote part of it, then
	// dropped the rest with the queue. Anyone else must get whole lines.
	if m.cut != "" && (m.kind == "good" || m.bye) {
		s.t.Errorf("%s (%s): the connection ended inside a line: %q", m.nick, m.kind, m.cut)
	}
	if !errors.Is(m.end, io.EOF) && (m.kind == "good" || m.bye) {
		s.t.Errorf("%s (%s): the connection ended with %v, want EOF", m.nick, m.kind, m.end)
	}
	if m.kind == kLate {
		if !m.bye {
			return
		}
		s.stats.lateServed++
	} else if !m.bye {
		s.t.Errorf("%s never got its \"* bye\"", m.nick)
	}
	want := 0
	for _, from := range s.senders[m.joinIdx:m.quitIdx] {
		if from != m.id {
			want++
		}
	}
	if got := int(m.inWindow.Load()); got != want {
		s.t.Errorf("%s (%s) received %d of the %d lines sent while it was in the room (lines %d to %d)", m.nick, m.kind, got, want, m.joinIdx, m.quitIdx-1)
	}
}

// checkNotices checks the observer's count: every member that came after it joined once and left
// once (whichever way), and nobody else was announced.
func (s *soak) checkNotices() {
	o := s.observer
	for name, n := range o.joined {
		if n != 1 || o.departed[name] != 1 {
			s.t.Errorf("the room announced that %s joined %d times and left %d times, want once each", name, n, o.departed[name])
		}
	}
	for name := range o.departed {
		if o.joined[name] == 0 {
			s.t.Errorf("the room announced that %s left, but never that it joined", name)
		}
	}
	if want := s.stats.clients - 1; len(o.joined) != want {
		s.t.Errorf("the room announced %d members after the observer, want %d", len(o.joined), want)
	}
}

// checkFDs waits until the server holds the fds it held with no client. The count has no
// event to wait on, so it is polled up to a bound: the server has closed most sockets before the
// observer heard of the departure, but a member that left with output queued is closed only when a
// write to it fails.
func (s *soak) checkFDs() {
	s.t.Helper()
	deadline := time.Now().Add(soakWait)
	for {
		if err := s.srv.Settle(0, false, soakWait); err != nil {
			s.t.Fatal(err)
		}
		got := fdKinds(s.t, s.srv.Pid())
		extra := fdExtra(s.baseline, got)
		if len(extra) == 0 {
			return
		}
		if time.Now().After(deadline) {
			s.t.Errorf("the server holds more fds than it did with no client: %s", strings.Join(extra, ", "))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fdKinds counts the open fds of process pid by what they are: socket, pipe, /dev/null, an epoll
// instance ("anon_inode:[eventpoll]"), ...
func fdKinds(t testing.TB, pid int) map[string]int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range ents {
		what, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		if i := strings.Index(what, ":["); i >= 0 && !strings.HasPrefix(what, "anon_inode:") {
			what = what[:i] // socket:[12345], pipe:[678]: the inode changes, the kind does not
		}
		count[what]++
	}
	return count
}

// fdExtra lists the kinds of fd that got has more of than before. The Go runtime opens an epoll fd
// and an eventfd of its own the first time it needs a timer, which step04 may meet only during the
// run: one of each is not the server's leak.
func fdExtra(before, got map[string]int) []string {
	var extra []string
	for k, n := range got {
		allowed := before[k]
		if (k == "anon_inode:[eventpoll]" || k == "anon_inode:[eventfd]") && before["anon_inode:[eventfd]"] == 0 {
			allowed++
		}
		if n > allowed {
			extra = append(extra, fmt.Sprintf("%d %s, %d before", n, k, before[k]))
		}
	}
	slices.Sort(extra)
	return extra
}

// statusBytes reads a size field (VmRSS, VmHWM, ...) of /proc/PID/status, in bytes.
func statusBytes(t testing.TB, pid int, field string) int {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("%s %q: %v", field, v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// closed reports whether ch is closed, without waiting.
func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// loopsOf is the number of event loops tg's server runs: its -loops flag, or one.
func loopsOf(tg target) int {
	if i := slices.Index(tg.args, "-loops"); i >= 0 && i+1 < len(tg.args) {
		if n, err := strconv.Atoi(tg.args[i+1]); err == nil {
			return n
		}
	}
	return 1
}
