//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// A chatLoad is the fan-out workload: members in one room, of whom the first few send lines. Paced,
// a sender keeps at most window lines that some member has not received yet, as a polite client
// would. Unpaced (window 0), it writes its lines as fast as TCP takes them, as an outsider's load
// generator does: then the room's queues grow as fast as the server reads, and a room that puts out
// members too slow to read may lose lines, which the run counts.
type chatLoad struct {
	members, senders, lines, window int
}

// chatModes are the two ways the senders send: the report has a table for each.
var chatModes = []string{"paced", "unpaced"}

// mode is the load with senders sending the named way.
func (l chatLoad) mode(name string) chatLoad {
	if name == "unpaced" {
		l.window = 0
	}
	return l
}

// A chatRun is one fan-out measured from the first line sent to the last line received.
type chatRun struct {
	deliveries int // lines received, each checked: right sender, in order, none twice
	missing    int // lines some member never received: it was put out, or a line was skipped
	elapsed    time.Duration
	cpu        time.Duration
	latency    []time.Duration // of every delivery: from the write of the line to its reading
}

func (r chatRun) lat(q float64) time.Duration { return echoRun{rtts: r.latency}.rtt(q) }

// chatOnce starts p, brings load.members into its room and measures the fan-out.
//
// The wire protocol is the lab's chat room (step04): a client sends lines; every other client receives
// "name: text"; /who is answered. Member 0 asks /who and waits for the answer: it is in the room. Then
// the others join one at a time and each says "join I"; the next joins only when all earlier members
// have heard it. So every member is in the room before the first measured line, and each member's name
// is learned from how the others see it. Measured lines say "m SENDER SEQ". A receiver
// checks that a line comes from the sender it names, never from itself, and in sequence: that proves
// every member got every line of the others exactly once. Notices ("* ...") are not checked.
func chatOnce(p program, load chatLoad) (chatRun, error) {
	defer lockThread()()
	var run chatRun
	srv, err := start(p)
	if err != nil {
		return run, err
	}
	defer srv.stop()
	sa, err := sockaddr(srv.addr)
	if err != nil {
		return run, err
	}
	pl, err := newPoller()
	if err != nil {
		return run, err
	}
	defer pl.close()

	type member struct {
		fd      int
		name    string      // as the others see it
		partial []byte      // the start of a line not yet complete
		heard   []int       // heard[s]: lines received from member s so far (the next expected sequence number)
		joins   int         // "join" lines heard
		lines   int         // lines of any kind heard
		sent    int         // measured lines sent
		sentAt  []time.Time // when each measured line was written
		out     []byte      // lines of a sender not yet taken by its socket
		watched bool        // registered for EPOLLOUT: its socket took no more
		gone    bool        // the server closed it during the fan-out (put out): its lines missed count as missing
	}
	ms := make([]*member, load.members)
	defer func() {
		srv.stop() // first, as in echoOnce
		for _, m := range ms {
			if m != nil {
				unix.Close(m.fd)
			}
		}
	}()
	buf := make([]byte, 64<<10)
	var fail error
	fanning := false // joining, a closed connection is a failure; fanning out, a member put out
	// gone marks member r closed by the server: what it did not receive counts as missing.
	gone := func(r int) {
		ms[r].gone = true
		pl.ctl(unix.EPOLL_CTL_DEL, ms[r].fd, r, 0)
	}
	// receive reads what member r has been sent and checks each complete line.
	receive := func(r int) {
		m := ms[r]
		if m.gone {
			return
		}
		n, err := unix.Read(m.fd, buf)
		if err == unix.EAGAIN {
			return
		}
		if (err != nil || n == 0) && fanning && srv.alive() == nil {
			gone(r)
			return
		}
		if err != nil || n == 0 {
			fail = fmt.Errorf("member %d: the server closed the connection (read: %d, %v; %v)", r, n, err, srv.alive())
			return
		}
		now := time.Now() // every line of this read arrived by now
		m.partial = append(m.partial, buf[:n]...)
		rest := m.partial
		for {
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				break
			}
			line := rest[:i]
			rest = rest[i+1:]
			m.lines++
			if bytes.HasPrefix(line, []byte("* ")) {
				continue // a notice from the server: a welcome, a join, the answer to /who
			}
			name, text, ok := bytes.Cut(line, []byte(": "))
			if !ok || len(name) == 0 {
				continue // not a member's line
			}
			if j, ok := bytes.CutPrefix(text, []byte("join ")); ok {
				s, ok := number(j)
				if !ok || s >= len(ms) || ms[s] == nil {
					fail = fmt.Errorf("member %d heard %q, from nobody", r, line)
					return
				}
				if ms[s].name == "" {
					ms[s].name = string(name)
				}
				m.joins++
				continue
			}
			t, ok := bytes.CutPrefix(text, []byte("m "))
			if !ok {
				continue
			}
			a, b, _ := bytes.Cut(t, []byte(" "))
			s, ok1 := number(a)
			seq, ok2 := number(b)
			switch {
			case !ok1 || !ok2 || s >= load.senders:
				fail = fmt.Errorf("member %d heard %q: not a line any sender sent", r, line)
			case s == r:
				fail = fmt.Errorf("member %d heard its own line %q: lines go to the others", r, line)
			case string(name) != ms[s].name:
				fail = fmt.Errorf("member %d heard %q: sender %d is called %q", r, line, s, ms[s].name)
			case seq < m.heard[s]:
				fail = fmt.Errorf("member %d heard %q twice (or out of order)", r, line)
			case seq >= len(ms[s].sentAt):
				fail = fmt.Errorf("member %d heard %q before sender %d sent it", r, line, s)
			}
			if fail != nil {
				return
			}
			// A line skipped is missing, not fatal: the run goes on and the report counts it (as
			// want less delivered), so a room that drops lines shows how many.
			m.heard[s] = seq + 1
			run.deliveries++
			run.latency = append(run.latency, now.Sub(ms[s].sentAt[seq]))
		}
		m.partial = append(m.partial[:0], rest...)
	}
	// pump waits for events until done() or an error; progress resets the stall clock.
	pump := func(what string, done func() bool) error {
		last := time.Now()
		for !done() && fail == nil {
			evs, err := pl.wait(time.Second)
			if err != nil {
				return err
			}
			if len(evs) > 0 {
				last = time.Now()
			} else if time.Since(last) > stall {
				if err := srv.alive(); err != nil {
					return err
				}
				return fmt.Errorf("%s: no progress for %v", what, stall)
			}
			for _, ev := range evs {
				receive(int(ev.Fd))
			}
		}
		return fail
	}
	// write sends one line whole; a chat line is short, so a short write means the server stopped reading.
	write := func(i int, line string) error {
		if w, err := unix.Write(ms[i].fd, []byte(line)); err != nil || w != len(line) {
			return fmt.Errorf("member %d: write %q: %d bytes, %v", i, line, w, err)
		}
		return nil
	}

	// Join, one member at a time.
	for i := range ms {
		fd, err := dialStart(sa)
		if err != nil {
			return run, err
		}
		ms[i] = &member{fd: fd, heard: make([]int, load.senders)}
		if err := waitConnected(fd); err != nil {
			return run, fmt.Errorf("member %d: %w", i, err)
		}
		if err := pl.ctl(unix.EPOLL_CTL_ADD, fd, i, unix.EPOLLIN); err != nil {
			return run, err
		}
		if i == 0 {
			// Accepted is not yet in the room (a goroutine server adds a member when its goroutine
			// runs): ask who is here, and wait for the answer.
			if err := write(0, "/who\n"); err != nil {
				return run, err
			}
			if err := pump("member 0 joining", func() bool { return ms[0].lines > 0 }); err != nil {
				return run, err
			}
			continue
		}
		if err := write(i, fmt.Sprintf("join %d\n", i)); err != nil {
			return run, err
		}
		if err := pump(fmt.Sprintf("member %d joining", i), func() bool {
			for k, m := range ms[:i] {
				if m.joins < i-k { // member k has heard the joins of members k+1..i (member 0: 1..i)
					return false
				}
			}
			return true
		}); err != nil {
			return run, err
		}
	}
	// Member 0 never said a word; give it a name the same way, heard by member 1.
	if err := write(0, "join 0\n"); err != nil {
		return run, err
	}
	if err := pump("member 0 speaking", func() bool {
		for k, m := range ms[1:] {
			if m.joins < len(ms)-1-k { // now also member 0's
				return false
			}
		}
		return true
	}); err != nil {
		return run, err
	}

	// Fan out.
	fanning = true
	cpu0, err := srv.cpu()
	if err != nil {
		return run, err
	}
	t0 := time.Now()
	run.latency = make([]time.Duration, 0, load.senders*load.lines*(load.members-1))
	complete := func(s int) int { // lines of sender s that every other member still here has received
		low := load.lines
		for r, m := range ms {
			if r != s && !m.gone {
				low = min(low, m.heard[s])
			}
		}
		return low
	}
	finished := func() bool {
		for s := range load.senders {
			if !ms[s].gone && complete(s) < load.lines {
				return false
			}
		}
		return true
	}
	// send writes sender s's next lines: paced, while fewer than load.window of its lines are not yet
	// everywhere; unpaced, until its socket takes no more, and then again when epoll says it has
	// space. A line's time is taken as it is put in the buffer, just before the write that sends it.
	send := func(s int) error {
		m := ms[s]
		for !m.gone {
			// Paced, one line a write, as before issue 22; unpaced, up to 4 KiB of lines a write.
			for (len(m.out) == 0 || load.window == 0 && len(m.out) < 4<<10) && m.sent < load.lines && (load.window == 0 || m.sent-complete(s) < load.window) {
				m.sentAt = append(m.sentAt, time.Now())
				m.out = fmt.Appendf(m.out, "m %d %d\n", s, m.sent)
				m.sent++
			}
			if len(m.out) == 0 {
				break
			}
			w, err := unix.Write(m.fd, m.out)
			if err == unix.EAGAIN {
				if !m.watched {
					m.watched = true
					return pl.ctl(unix.EPOLL_CTL_MOD, m.fd, s, unix.EPOLLIN|unix.EPOLLOUT)
				}
				return nil
			}
			if err != nil { // put out: its reads will say so too
				gone(s)
				return nil
			}
			m.out = m.out[:copy(m.out, m.out[w:])]
		}
		if m.watched && !m.gone {
			m.watched = false
			return pl.ctl(unix.EPOLL_CTL_MOD, m.fd, s, unix.EPOLLIN)
		}
		return nil
	}
	last := t0
	for !finished() {
		for s := range load.senders {
			if !ms[s].watched {
				if err := send(s); err != nil {
					return run, err
				}
			}
		}
		evs, err := pl.wait(time.Second)
		if err != nil {
			return run, err
		}
		if len(evs) > 0 {
			last = time.Now()
		} else if time.Since(last) > stall {
			if err := srv.alive(); err != nil {
				return run, err
			}
			return run, fmt.Errorf("fan-out: no progress for %v (%d lines delivered)", stall, run.deliveries)
		}
		for _, ev := range evs {
			i := int(ev.Fd)
			if ev.Events&unix.EPOLLOUT != 0 && ms[i].watched {
				if err := send(i); err != nil {
					return run, err
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
				continue
			}
			if receive(i); fail != nil {
				return run, fail
			}
		}
	}
	run.elapsed = time.Since(t0)
	cpu1, err := srv.cpu()
	if err != nil {
		return run, err
	}
	run.cpu = cpu1 - cpu0
	run.missing = load.senders*load.lines*(load.members-1) - run.deliveries
	return run, nil
}

// number parses a small decimal number, without the allocations of fmt.Sscanf: the generator parses
// a million lines a second and must not become the bottleneck.
func number(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// waitConnected waits (at most stall) for a nonblocking connect to finish.
func waitConnected(fd int) error {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	deadline := time.Now().Add(stall)
	for {
		n, err := unix.Poll(fds, int(time.Until(deadline)/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("connect: no answer within %v", stall)
		}
		if e, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); e != 0 {
			return fmt.Errorf("connect: %w", unix.Errno(e))
		}
		return nil
	}
}

// runChat measures the fan-out on every chat room, paced and unpaced, a fresh server each time.
func runChat(cfg config, res *results, progs []program, log io.Writer) error {
	for _, mode := range chatModes {
		load := cfg.chat.mode(mode)
		if res.chat[mode] == nil {
			res.chat[mode] = map[string]*chatCell{}
		}
		for rep := range cfg.chatReps {
			for _, p := range turn(progs, rep) {
				run, err := chatOnce(p, load)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", p.name, mode, err)
				}
				cell := res.chat[mode][p.name]
				if cell == nil {
					cell = &chatCell{}
					res.chat[mode][p.name] = cell
				}
				rate := float64(run.deliveries) / run.elapsed.Seconds()
				cpu := float64(run.cpu) / float64(time.Microsecond) / float64(max(run.deliveries, 1))
				cell.rate, cell.cpu, cell.deliveries = append(cell.rate, rate), append(cell.cpu, cpu), run.deliveries
				cell.p50, cell.p99 = append(cell.p50, us(run.lat(0.5))), append(cell.p99, us(run.lat(0.99)))
				cell.missing = append(cell.missing, run.missing)
				fmt.Fprintf(log, "chat %-7s rep %d/%d %-24s %9.0f lines/s  cpu %5.3f µs/line  p50 %7.0f µs  p99 %7.0f µs  (%d deliveries checked, %d missing)\n",
					mode, rep+1, cfg.chatReps, p.name, rate, cpu, us(run.lat(0.5)), us(run.lat(0.99)), run.deliveries, run.missing)
			}
		}
	}
	return nil
}
