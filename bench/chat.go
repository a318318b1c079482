//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// A chatLoad is the fan-out workload: members in one room, of whom the first few send lines. A sender
// keeps at most window lines that some member has not received yet, as a polite client would; without
// that, the room's queues would just grow.
type chatLoad struct {
	members, senders, lines, window int
}

// A chatRun is one fan-out measured from the first line sent to the last line received.
type chatRun struct {
	deliveries int // lines received, each checked: right sender, right order, none missing, none twice
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
	// receive reads what member r has been sent and checks each complete line.
	receive := func(r int) {
		m := ms[r]
		n, err := unix.Read(m.fd, buf)
		if err == unix.EAGAIN {
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
			case seq > m.heard[s]:
				fail = fmt.Errorf("member %d heard %q but missed line %d of sender %d", r, line, m.heard[s], s)
			}
			if fail != nil {
				return
			}
			m.heard[s]++
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
	cpu0, err := srv.cpu()
	if err != nil {
		return run, err
	}
	t0 := time.Now()
	run.latency = make([]time.Duration, 0, load.senders*load.lines*(load.members-1))
	complete := func(s int) int { // lines of sender s that every other member has received
		low := load.lines
		for r, m := range ms {
			if r != s {
				low = min(low, m.heard[s])
			}
		}
		return low
	}
	finished := func() bool {
		for s := range load.senders {
			if complete(s) < load.lines {
				return false
			}
		}
		return true
	}
	last := t0
	for !finished() {
		for s := range load.senders {
			m := ms[s]
			for m.sent < load.lines && m.sent-complete(s) < load.window {
				m.sentAt = append(m.sentAt, time.Now())
				if err := write(s, fmt.Sprintf("m %d %d\n", s, m.sent)); err != nil {
					return run, err
				}
				m.sent++
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
			if receive(int(ev.Fd)); fail != nil {
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
	if want := load.senders * load.lines * (load.members - 1); run.deliveries != want {
		return run, fmt.Errorf("%d lines delivered, want %d", run.deliveries, want)
	}
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

// runChat measures the fan-out on every chat room, a fresh server each time.
func runChat(cfg config, res *results, progs []program, log io.Writer) error {
	for rep := range cfg.chatReps {
		for _, p := range turn(progs, rep) {
			run, err := chatOnce(p, cfg.chat)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			cell := res.chat[p.name]
			if cell == nil {
				cell = &chatCell{}
				res.chat[p.name] = cell
			}
			rate := float64(run.deliveries) / run.elapsed.Seconds()
			cpu := float64(run.cpu) / float64(time.Microsecond) / float64(run.deliveries)
			cell.rate, cell.cpu, cell.deliveries = append(cell.rate, rate), append(cell.cpu, cpu), run.deliveries
			cell.p50, cell.p99 = append(cell.p50, us(run.lat(0.5))), append(cell.p99, us(run.lat(0.99)))
			fmt.Fprintf(log, "chat rep %d/%d %-20s %9.0f lines/s  cpu %5.2f µs/line  p50 %7.0f µs  p99 %7.0f µs  (%d deliveries checked)\n",
				rep+1, cfg.chatReps, p.name, rate, cpu, us(run.lat(0.5)), us(run.lat(0.99)), run.deliveries)
		}
	}
	return nil
}
