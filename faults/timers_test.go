//go:build linux

package faults

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The rows of step07 (issue 14): clients that hold a socket by saying nothing, or by never finishing
// a line. A server without a clock keeps every one of them for as long as they like ("held"); step07
// frees each within its deadline, and the honest members are served throughout.

const (
	attackers    = 1000
	attackWindow = 2 * time.Second        // the deadline step07 is given (-linetimeout, -idle)
	attackSlack  = 8 * time.Second        // on top of it: a loaded machine's lateness, and the room telling 1,000 members of 1,000 put-outs, with the trace on
	trickleEvery = 100 * time.Millisecond // a slowloris sends one byte this often
	heldFor      = 2 * attackWindow       // how long a server without a clock is watched keeping them
)

// slowlorisArgs and silentArgs give the servers that keep time a short deadline.
func slowlorisArgs(tg target) []string {
	if tg.clock {
		return []string{"-linetimeout", attackWindow.String()}
	}
	return nil
}

func silentArgs(tg target) []string {
	if tg.clock {
		return []string{"-idle", attackWindow.String()}
	}
	return nil
}

// slowloris: 1,000 members each send a byte every 100 ms and never a newline.
func slowloris(r *row) { attack(r, true) }

// silent: 1,000 clients connect and say nothing.
func silent(r *row) { attack(r, false) }

// An attacker is one of the crowd, with what the row saw of it.
type attacker struct {
	fd    int
	came  time.Time // its connect (a silent client) or its first byte (a slowloris): its deadline is later
	freed time.Time // when the row saw the server close it
}

// attack connects the crowd (trickling a byte from each every 100 ms if slow) while g1 and g2 keep
// asking the server for an answer. A server with a clock must close every attacker no sooner than
// its deadline, and the last no later than the deadline and the slack after the server had them
// all; one without must still hold them all when twice the deadline has passed.
func attack(r *row, trickle bool) {
	r.setup()
	before := r.sockets()
	crowd := make([]*attacker, attackers)
	probes := newProbes(r)
	for i := range crowd {
		probes.keepAlive()
		fd, err := dialRaw(r.srv.Addr)
		if err != nil {
			r.t.Fatalf("attacker %d: %v", i+1, err)
		}
		r.t.Cleanup(func() { resetRaw(fd) })
		crowd[i] = &attacker{fd: fd, came: time.Now()}
	}
	if r.tg.chat {
		// The room announces each attacker to everyone, a thousand times a thousand lines, and may
		// still be at it: once g1 has heard every join, the server has them all.
		probes.joins(attackers)
	}
	allIn := time.Now()
	bound := 2 * attackWindow
	if r.tg.clock {
		bound = attackWindow + attackSlack + 10*time.Second // a failure, past this: not freed
	}
	for alive, first := len(crowd), true; time.Since(allIn) < bound && (alive > 0 || !r.tg.clock); first = false {
		tick := time.Now()
		alive = 0
		for _, a := range crowd {
			if trickle && first {
				a.came = time.Now()
			}
			if a.freed.IsZero() && (closedRaw(a.fd) || trickle && !sendRaw(a.fd, "x")) {
				a.freed = time.Now()
			}
			if a.freed.IsZero() {
				alive++
			}
		}
		if trickle && first {
			allIn = time.Now() // the server has every slowlorises' first byte
		}
		probes.ask()
		time.Sleep(max(0, trickleEvery-time.Since(tick))) // the attack's pace, not a wait for the server
	}
	var early, last time.Duration = bound, 0 // the soonest an attacker was closed after it came; the last close after allIn
	closed := 0
	for _, a := range crowd {
		if !a.freed.IsZero() {
			closed++
			early, last = min(early, a.freed.Sub(a.came)), max(last, a.freed.Sub(allIn))
		}
	}
	what := "line"
	if !trickle {
		what = "idle"
	}
	if !r.tg.clock {
		if closed > 0 {
			r.t.Errorf("a server with no clock closed %d of the %d attackers", closed, attackers)
		}
		if got := r.sockets(); got != before+attackers {
			r.t.Errorf("the server holds %d sockets, want %d (the %d attackers it keeps)", got, before+attackers, attackers)
		}
		r.cell.status = "held"
		r.cell.evidence = append(r.cell.evidence, fmt.Sprintf("no deadline: all %d still open after %v; every member's answer came", attackers, bound))
		r.t.Logf("held all %d attackers for %v; the members' slowest answer took %v", attackers, bound, probes.worst)
		return
	}
	if closed < attackers {
		r.t.Fatalf("%d of the %d attackers are still open %v after the server had them all (deadline %v)", attackers-closed, attackers, time.Since(allIn).Round(time.Millisecond), attackWindow)
	}
	if early < attackWindow-trickleEvery {
		r.t.Errorf("an attacker was closed %v after it came, before its deadline (%v)", early, attackWindow)
	}
	if last > attackWindow+attackSlack {
		r.t.Errorf("the last attacker was closed %v after the server had them all: more than the deadline (%v) and %v", last, attackWindow, attackSlack)
	}
	if probes.worst > attackSlack {
		r.t.Errorf("a member's answer took %v (bound %v) while the attackers were closed", probes.worst, attackSlack)
	}
	r.evidenceAnon(`^timeout\s+c\d+ ` + what + `$`)
	r.cell.evidence = append(r.cell.evidence, fmt.Sprintf("all %d closed after their deadline (%v) and within %v of it; every member's answer came", attackers, attackWindow, attackSlack))
	r.t.Logf("all %d attackers closed, none sooner than %v after it came, the last %v after the server had them all; the members' slowest answer took %v",
		attackers, early.Round(time.Millisecond), last.Round(time.Millisecond), probes.worst.Round(time.Millisecond))
	probes.finish()
	if got := r.sockets(); got != before {
		r.t.Errorf("the server holds %d sockets, %d before the attackers came", got, before)
	}
}

// evidenceAnon records the first trace line re matches, with its client shown as cN (which of the
// thousand came first depends on the run).
func (r *row) evidenceAnon(re string) {
	r.t.Helper()
	line := firstMatch(r.srv.Trace(), regexp.MustCompile(re))
	if line == "" {
		r.t.Errorf("no trace line matches %s", re)
		return
	}
	r.cell.evidence = append(r.cell.evidence, strings.Join(strings.Fields(regexp.MustCompile(`\bc\d+\b`).ReplaceAllString(line, "cN")), " "))
}

// sockets counts the server's open sockets.
func (r *row) sockets() int { return fdKinds(r.t, r.srv.Pid())["socket"] }

// probes are g1's and g2's questions to the server during an attack: each asks, waits for its answer
// (skipping what else the room tells it: joins, put-outs), and the slowest answer is kept.
type probes struct {
	r        *row
	asked    int
	last     time.Time // when they last asked
	worst    time.Duration
	joinedAt map[string]time.Time // when g1 heard that each member joined
}

// keepAlive has g1 and g2 ask if they have not for a quarter of the attack's deadline: they are
// members who talk, and an idle deadline of 2 s must not close them while the crowd comes.
func (p *probes) keepAlive() {
	if time.Since(p.last) >= attackWindow/4 {
		p.ask()
	}
}

func newProbes(r *row) *probes { return &probes{r: r, joinedAt: map[string]time.Time{}} }

// heard notes a line of the room that g received while it waited for something else.
func (p *probes) heard(g, line string) {
	if name, ok := strings.CutSuffix(strings.TrimPrefix(line, "* "), " joined\n"); ok && g == "g1" {
		p.joinedAt[name] = time.Now()
	}
}

// joins reads g1's lines until it has heard n members join, asking now and then (an idle deadline
// must not close g1 or g2 while they listen).
func (p *probes) joins(n int) {
	p.r.t.Helper()
	c := p.r.s.Client("g1")
	for {
		p.keepAlive() // its question's answer may come after the last join: then that was all
		if len(p.joinedAt) >= n {
			return
		}
		l, err := c.ReadLine(crowdWait)
		if err != nil {
			p.r.t.Fatalf("g1 heard %d members join of %d: %v", len(p.joinedAt), n, err)
		}
		p.heard("g1", l)
	}
}

// ask has g1 and g2 each ask once and wait for the answer: an echo of a line, or, in the room, a
// private line to itself.
func (p *probes) ask() {
	p.r.t.Helper()
	p.last = time.Now()
	for _, g := range []string{"g1", "g2"} {
		p.asked++
		c, m := p.r.s.Client(g), p.r.byName[g]
		line := fmt.Sprintf("probe %d", p.asked)
		send, want := line+"\n", line+"\n"
		if p.r.tg.chat {
			send, want = "/msg "+m.nick+" "+line+"\n", m.nick+" (private): "+line+"\n"
		}
		t0 := time.Now()
		if err := c.Send([]byte(send), crowdWait); err != nil {
			p.r.t.Fatalf("%s: %v", g, err)
		}
		for {
			l, err := c.ReadLine(crowdWait)
			if err != nil {
				p.r.t.Fatalf("%s, waiting for the answer to %q: %v", g, line, err)
			}
			if l == want {
				break
			}
			if !p.r.tg.chat || !strings.HasPrefix(l, "* ") {
				p.r.t.Fatalf("%s got %q while it waited for %q", g, l, want)
			}
			p.heard(g, l)
		}
		p.worst = max(p.worst, time.Since(t0))
	}
}

// finish reads what the room still had to tell g1 and g2 about the attackers, so that the row's
// session ends with nothing unread.
func (p *probes) finish() {
	p.ask()
}

// dialRaw connects a TCP socket to addr (IP:port, loopback), then makes it nonblocking: the row
// reads and writes a thousand of them in turn and must not wait on any one.
func dialRaw(addr string) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return -1, err
	}
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()})
	if ap.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for err = unix.Connect(fd, sa); err == unix.EINTR; err = unix.Connect(fd, sa) {
	}
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// closedRaw reads what waits on fd and reports whether the server has closed the connection.
func closedRaw(fd int) bool {
	var buf [512]byte
	for {
		n, err := unix.Read(fd, buf[:])
		switch {
		case errors.Is(err, unix.EAGAIN):
			return false
		case err != nil || n == 0:
			return true
		}
	}
}

// sendRaw writes s to fd without waiting and reports whether the connection still takes bytes.
func sendRaw(fd int, s string) bool {
	_, err := unix.Write(fd, []byte(s))
	return err == nil || errors.Is(err, unix.EAGAIN)
}

// resetRaw closes fd with an RST: no TIME_WAIT left behind for the next row's ports.
func resetRaw(fd int) {
	unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(fd)
}
