//go:build linux

package main

// The load generator. It is one goroutine on one locked OS thread driving every connection through its
// own epoll instance, with x/sys/unix rather than net: per message it makes one write and one read plus
// a share of an epoll_wait, the same work as the best server it measures, and no goroutine switches or
// netpoller hand-offs. On a 2-core machine the generator then needs about one core and leaves the other
// to the server, which is what lets a fast server show that it is fast. (Server CPU per message is still
// the figure to trust: it does not depend on how fast the generator is.)

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// stall is how long the generator waits without any progress before it declares the server stuck.
const stall = 5 * time.Second

// A poller is an epoll instance. Each workload makes its own and closes it after, which drops every
// registration at once. The 64 bits of user data in an event hold an index into the workload's own
// table of connections.
type poller struct {
	epfd int
	evs  []unix.EpollEvent
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	return &poller{epfd: epfd, evs: make([]unix.EpollEvent, 256)}, nil
}

func (p *poller) ctl(op, fd, index int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(index)}
	if err := unix.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}
	return nil
}

// wait returns the ready events, waiting at most d. A signal (EINTR) returns no events: the caller
// loops anyway.
func (p *poller) wait(d time.Duration) ([]unix.EpollEvent, error) {
	ms := int(d / time.Millisecond)
	if d > 0 && ms == 0 {
		ms = 1
	}
	n, err := unix.EpollWait(p.epfd, p.evs, ms)
	if err == unix.EINTR {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("epoll_wait: %w", err)
	}
	return p.evs[:n], nil
}

func (p *poller) close() { unix.Close(p.epfd) }

// lockThread keeps the calling goroutine on one OS thread for the duration of a workload, so the
// generator's hot loop never migrates between threads.
func lockThread() func() {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}

// dialStart begins a nonblocking connect to addr; the socket becomes writable when it completes.
func dialStart(addr unix.Sockaddr) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	// Every message is written whole; do not let Nagle hold back the next one.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := unix.Connect(fd, addr); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return -1, fmt.Errorf("connect: %w", err)
	}
	return fd, nil
}

// sockaddr parses "127.0.0.1:PORT", as servers print it.
func sockaddr(addr string) (unix.Sockaddr, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return nil, fmt.Errorf("server address %q: want IPv4:port", addr)
	}
	return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// An openResult says what happened to connections opened with open.
type openResult struct {
	held    []int  // connected, and their probe came back intact
	refused int    // the server closed them (or answered something else) instead of echoing
	said    string // the first line a refused client was sent, if any
}

// open makes n connections to an echo server at addr and proves each one is served: it sends a short
// probe and reads it back. A connection the server closes instead (select past FD_SETSIZE) counts as
// refused, and what the server said is kept. At most 64 connections are in the making at once, well
// under the servers' listen backlog, so no SYN is dropped and no connect waits for a retransmission.
func open(addr string, n int) (openResult, error) {
	defer lockThread()()
	var res openResult
	sa, err := sockaddr(addr)
	if err != nil {
		return res, err
	}
	p, err := newPoller()
	if err != nil {
		return res, err
	}
	defer p.close()

	type pending struct {
		fd  int
		got []byte
	}
	probe := func(i int) []byte { return fmt.Appendf(nil, "probe %06d\n", i) }
	conns := make([]pending, n)
	inflight, started, finished := 0, 0, 0
	fail := func(err error) (openResult, error) {
		for _, c := range conns[:started] {
			if c.fd >= 0 {
				unix.Close(c.fd)
			}
		}
		closeAll(res.held)
		return openResult{}, err
	}
	last := time.Now()
	buf := make([]byte, 4096)
	for finished < n {
		for inflight < 64 && started < n {
			fd, err := dialStart(sa)
			if err != nil {
				return fail(fmt.Errorf("connection %d of %d: %w", started+1, n, err))
			}
			conns[started] = pending{fd: fd}
			if err := p.ctl(unix.EPOLL_CTL_ADD, fd, started, unix.EPOLLOUT); err != nil {
				return fail(err)
			}
			started++
			inflight++
		}
		evs, err := p.wait(time.Second)
		if err != nil {
			return fail(err)
		}
		if len(evs) > 0 {
			last = time.Now()
		} else if time.Since(last) > stall {
			return fail(fmt.Errorf("opening connections: no progress for %v (%d of %d done)", stall, finished, n))
		}
		for _, ev := range evs {
			i := int(ev.Fd)
			c := &conns[i]
			if c.got == nil { // connecting: writable means the handshake is over, one way or the other
				if e, _ := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR); e != 0 {
					return fail(fmt.Errorf("connect: %w", unix.Errno(e)))
				}
				if w, err := unix.Write(c.fd, probe(i)); err != nil || w != len(probe(i)) {
					return fail(fmt.Errorf("probe write: %d bytes, %v", w, err))
				}
				c.got = []byte{}
				if err := p.ctl(unix.EPOLL_CTL_MOD, c.fd, i, unix.EPOLLIN); err != nil {
					return fail(err)
				}
				continue
			}
			r, err := unix.Read(c.fd, buf)
			if err == unix.EAGAIN {
				continue
			}
			want := probe(i)
			if r > 0 {
				c.got = append(c.got, buf[:r]...)
			}
			switch {
			case err == nil && r > 0 && bytes.HasPrefix(want, c.got):
				if len(c.got) < len(want) {
					continue // the rest is on its way
				}
				p.ctl(unix.EPOLL_CTL_DEL, c.fd, i, 0)
				res.held = append(res.held, c.fd)
			default: // EOF, a reset, or something that is not our probe: the server turned us away
				if res.refused == 0 && len(c.got) > 0 {
					line, _, _ := bytes.Cut(c.got, []byte("\n"))
					res.said = string(line)
				}
				res.refused++
				unix.Close(c.fd)
			}
			c.fd = -1
			inflight--
			finished++
		}
	}
	return res, nil
}

// An echoRun is one measurement window of ping-pong on a set of connections.
type echoRun struct {
	msgs    int           // round trips completed inside the window
	elapsed time.Duration // the window's real length
	cpu     time.Duration // server CPU time used in the window
	sleeps  int           // times a server thread went to sleep in the window (see child.sleeps)
	rtts    []time.Duration
}

func (r echoRun) rate() float64 { return float64(r.msgs) / r.elapsed.Seconds() }

// cpuPerMsg is the server's CPU time per round trip, in microseconds.
func (r echoRun) cpuPerMsg() float64 {
	return float64(r.cpu) / float64(time.Microsecond) / float64(max(r.msgs, 1))
}

// sleepsPerMsg is how often, per round trip, a server thread went to sleep and had to be woken.
func (r echoRun) sleepsPerMsg() float64 { return float64(r.sleeps) / float64(max(r.msgs, 1)) }

func (r echoRun) rtt(q float64) time.Duration {
	if len(r.rtts) == 0 {
		return 0
	}
	s := slices.Clone(r.rtts)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// pingPong keeps one message of size bytes in flight on every connection in fds: write it, read the
// echo back, check every byte, send the next. It runs warm, then measures for window (reading the
// server's CPU time at both ends), then lets the messages in flight come back, so the connections are
// clean for the next workload. Each connection's message is its own byte pattern with a sequence number
// in front, so an echo sent to the wrong client, or stale, or cut short, does not match.
func pingPong(fds []int, size int, warm, window time.Duration, srv *child) (echoRun, error) {
	defer lockThread()()
	var run echoRun
	if size < 8 {
		return run, errors.New("messages must hold an 8-byte sequence number")
	}
	p, err := newPoller()
	if err != nil {
		return run, err
	}
	defer p.close()

	type conn struct {
		fd        int
		msg       []byte // what this connection sends, over and over; bytes 0-7 are the sequence number
		seq       uint64
		sent, got int // bytes of the current message written, and echoed back
		t0        time.Time
		out       bool // registered for EPOLLOUT: a write was short
	}
	conns := make([]conn, len(fds))
	for i, fd := range fds {
		c := &conns[i]
		c.fd, c.msg = fd, make([]byte, size)
		for j := range c.msg {
			c.msg[j] = byte(i*131 + j*7 + 1)
		}
		if err := p.ctl(unix.EPOLL_CTL_ADD, fd, i, unix.EPOLLIN); err != nil {
			return run, err
		}
	}
	// send writes what is left of c's message; a short write waits for EPOLLOUT.
	send := func(i int) error {
		c := &conns[i]
		for c.sent < size {
			w, err := unix.Write(c.fd, c.msg[c.sent:])
			if err == unix.EAGAIN {
				if !c.out {
					c.out = true
					return p.ctl(unix.EPOLL_CTL_MOD, c.fd, i, unix.EPOLLIN|unix.EPOLLOUT)
				}
				return nil
			}
			if err != nil {
				return fmt.Errorf("connection %d: write: %w", i, err)
			}
			c.sent += w
		}
		if c.out {
			c.out = false
			return p.ctl(unix.EPOLL_CTL_MOD, c.fd, i, unix.EPOLLIN)
		}
		return nil
	}
	next := func(i int, now time.Time) error {
		c := &conns[i]
		c.seq++
		binary.LittleEndian.PutUint64(c.msg, c.seq)
		c.sent, c.got, c.t0 = 0, 0, now
		return send(i)
	}

	begin := time.Now()
	for i := range conns {
		if err := next(i, begin); err != nil {
			return run, err
		}
	}
	measureAt, stopAt := begin.Add(warm), begin.Add(warm+window)
	var cpu0 time.Duration
	var sleeps0 int
	measuring, stopping := false, false
	inflight := len(conns)
	last := begin
	buf := make([]byte, 64<<10)
	for inflight > 0 {
		now := time.Now()
		if !measuring && !now.Before(measureAt) {
			if cpu0, err = srv.cpu(); err != nil {
				return run, err
			}
			sleeps0 = srv.sleeps()
			measuring, measureAt = true, now
			run.rtts = make([]time.Duration, 0, 1<<16)
		}
		if measuring && !stopping && !now.Before(stopAt) {
			cpu1, err := srv.cpu()
			if err != nil {
				return run, err
			}
			stopping, run.cpu, run.elapsed, run.sleeps = true, cpu1-cpu0, now.Sub(measureAt), srv.sleeps()-sleeps0
		}
		if now.Sub(last) > stall {
			if err := srv.alive(); err != nil {
				return run, err
			}
			return run, fmt.Errorf("%d of %d echoes missing after %v", inflight, len(conns), stall)
		}
		wake := stopAt.Sub(now)
		if !measuring {
			wake = measureAt.Sub(now)
		}
		evs, err := p.wait(max(wake, time.Millisecond))
		if err != nil {
			return run, err
		}
		for _, ev := range evs {
			i := int(ev.Fd)
			c := &conns[i]
			if ev.Events&unix.EPOLLOUT != 0 && c.sent < size {
				if err := send(i); err != nil {
					return run, err
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) == 0 {
				continue
			}
			// One read per event: level-triggered epoll reports the socket again if more is waiting.
			n, err := unix.Read(c.fd, buf)
			if err == unix.EAGAIN {
				continue
			}
			if err != nil || n == 0 {
				if aerr := srv.alive(); aerr != nil {
					return run, aerr
				}
				return run, fmt.Errorf("connection %d: the server closed it mid-echo (read: %d, %v)", i, n, err)
			}
			if c.got+n > c.sent || !bytes.Equal(buf[:n], c.msg[c.got:c.got+n]) {
				return run, fmt.Errorf("connection %d, message %d: the echo differs from what was sent (bytes %d..%d)", i, c.seq, c.got, c.got+n)
			}
			if c.got += n; c.got < size {
				continue
			}
			now := time.Now()
			last = now
			if measuring && !stopping {
				run.msgs++
				run.rtts = append(run.rtts, now.Sub(c.t0))
			}
			if stopping {
				inflight--
				continue
			}
			if err := next(i, now); err != nil {
				return run, err
			}
		}
	}
	return run, nil
}
