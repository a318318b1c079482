//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// A fairLoad is the fairness workload (issue 20.2): one member of a chat room floods 1000-byte lines
// as fast as TCP lets it, for at most lines lines or floodFor, whichever ends first; members other
// members read everything; and a prober, a member too, sends "/msg <its own name> ping K" one at a
// time and times each answer while the flood runs.
type fairLoad struct {
	members  int
	lines    int
	floodFor time.Duration
}

// fairRSSCap stops a run whose server holds more than this: a naive drain queues the flood for every
// member, and the bench must not take the machine's memory with it.
const fairRSSCap = 1 << 30

// fairWait bounds the whole of a run after the flood, and every wait for a member's next byte.
const fairWait = 10 * time.Second

// A fairRun is one flood against one server.
type fairRun struct {
	sent      int           // flood lines written
	flood     time.Duration // from the first line written to the last
	rtts      []time.Duration
	pings     int   // pings sent while the flood ran
	lost      int   // of which no answer came (the prober was put out, or the run ended)
	complete  int   // members (the prober among them) who received every flooded line, in order
	putOut    int   // members the room put out
	peakRSS   int64 // VmHWM at the end, bytes
	overCap   bool  // the server passed fairRSSCap and was stopped
	delivered int   // flood lines received, all members
}

// fairPrograms are the servers the fairness workload runs: the epoll chat rooms, and step06 once
// more with the naive drain.
func fairPrograms(chats []program) []program {
	var out []program
	for _, p := range chats {
		switch {
		case strings.HasPrefix(p.name, "step05"):
			out = append(out, p)
		case strings.HasPrefix(p.name, "step06"):
			out = append(out, p, program{p.name + " -readbudget 0", p.bin, append(slices.Clone(p.args), "-readbudget", "0")})
		}
	}
	return out
}

// runFairness floods every program's room, reps times, taking the servers in turn.
func runFairness(cfg config, res *results, progs []program, log io.Writer) error {
	for _, p := range progs {
		res.fairNames = append(res.fairNames, p.name)
	}
	for rep := range cfg.fairReps {
		for _, p := range turn(progs, rep) {
			run, err := fairOnce(p, cfg.fair)
			if err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			res.fair[p.name] = append(res.fair[p.name], run)
			fmt.Fprintf(log, "fairness rep %d/%d %-28s %6d lines in %5.2fs  probe p50 %8.2f ms p99 %8.2f ms (%d pings, %d lost)  members complete %d/%d, put out %d  peak RSS %d MiB%s\n",
				rep+1, cfg.fairReps, p.name, run.sent, run.flood.Seconds(), ms(run.rtt(0.5)), ms(run.rtt(0.99)), run.pings, run.lost,
				run.complete, cfg.fair.members, run.putOut, run.peakRSS>>20, map[bool]string{true: " (over the cap: stopped)"}[run.overCap])
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r fairRun) rtt(q float64) time.Duration { return echoRun{rtts: r.rtts}.rtt(q) }

// fairLine is the flood's i-th line, without its newline: 1000 bytes.
func fairLine(i int) []byte {
	s := fmt.Appendf(nil, "flood %07d ", i)
	return append(s, bytes.Repeat([]byte("."), 1000-len(s))...)
}

// fairOnce starts p and plays the flood against it.
func fairOnce(p program, load fairLoad) (fairRun, error) {
	var run fairRun
	srv, err := start(p)
	if err != nil {
		return run, err
	}
	defer srv.stop()
	sa, err := sockaddr(srv.addr)
	if err != nil {
		return run, err
	}
	// Members 0..members-1 read; member 0 also probes; the flooder joins last. Each connects, and
	// reads its welcome before the next connects, so that the room's names come in order.
	type member struct {
		fd      int
		name    string
		partial []byte
		next    int  // the next flood line expected
		done    bool // read the flood's "end", or was put out
		gone    bool // put out (EOF, reset, or the notice)
	}
	ms := make([]*member, load.members+1)
	defer func() {
		srv.stop()
		for _, m := range ms {
			if m != nil {
				unix.Close(m.fd)
			}
		}
	}()
	welcome := func(fd int) (string, error) {
		var got []byte
		deadline := time.Now().Add(fairWait)
		buf := make([]byte, 512)
		for !bytes.Contains(got, []byte("\n")) {
			if time.Now().After(deadline) {
				return "", fmt.Errorf("no welcome within %v", fairWait)
			}
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			unix.Poll(fds, 100)
			n, err := unix.Read(fd, buf)
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				return "", fmt.Errorf("closed before its welcome: %v", err)
			}
			got = append(got, buf[:n]...)
		}
		line, _, _ := bytes.Cut(got, []byte("\n"))
		rest, ok := bytes.CutPrefix(line, []byte("* welcome, "))
		name, _, ok2 := bytes.Cut(rest, []byte(";"))
		if !ok || !ok2 {
			return "", fmt.Errorf("welcome %q", line)
		}
		return string(name), nil
	}
	for i := range ms {
		fd, err := dialStart(sa)
		if err != nil {
			return run, err
		}
		ms[i] = &member{fd: fd}
		if err := waitConnected(fd); err != nil {
			return run, err
		}
		if ms[i].name, err = welcome(fd); err != nil {
			return run, fmt.Errorf("member %d: %w", i, err)
		}
	}
	flooder := ms[load.members]
	ms = ms[:load.members]
	floodPrefix := []byte(flooder.name + ": ")
	prober := ms[0]
	answer := []byte(prober.name + " (private): ping ")

	// The flooder: its own goroutine on its own thread, blocking writes of 64 lines at a time.
	if err := unix.SetNonblock(flooder.fd, false); err != nil {
		return run, err
	}
	var floodDone atomic.Bool
	var sent atomic.Int64
	floodErr := make(chan error, 1)
	t0 := time.Now()
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		stop := t0.Add(load.floodFor)
		var chunk []byte
		var err error
		for i := 0; i < load.lines && time.Now().Before(stop) && err == nil; {
			chunk = chunk[:0]
			for end := min(i+64, load.lines); i < end; i++ {
				chunk = append(append(chunk, fairLine(i)...), '\n')
			}
			for b := chunk; len(b) > 0 && err == nil; {
				var n int
				n, err = unix.Write(flooder.fd, b)
				if err == unix.EINTR {
					err = nil
				}
				b = b[max(n, 0):]
			}
			sent.Store(int64(i))
		}
		run.flood = time.Since(t0)
		floodDone.Store(true)
		if err == nil {
			_, err = unix.Write(flooder.fd, []byte("end\n"))
		}
		floodErr <- err
	}()

	// The readers: one thread, one epoll instance, every member but the flooder.
	defer lockThread()()
	pl, err := newPoller()
	if err != nil {
		return run, err
	}
	defer pl.close()
	for i, m := range ms {
		if err := pl.ctl(unix.EPOLL_CTL_ADD, m.fd, i, unix.EPOLLIN); err != nil {
			return run, err
		}
	}
	var pingAt time.Time
	pingK, waiting := 0, false
	ping := func() error {
		pingK++
		line := fmt.Sprintf("/msg %s ping %d\n", prober.name, pingK)
		if w, err := unix.Write(prober.fd, []byte(line)); err != nil || w != len(line) {
			return fmt.Errorf("prober: write: %d, %v", w, err)
		}
		pingAt, waiting = time.Now(), true
		run.pings++
		return nil
	}
	if err := ping(); err != nil {
		return run, err
	}
	buf := make([]byte, 64<<10)
	receive := func(i int) error {
		m := ms[i]
		n, err := unix.Read(m.fd, buf)
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil || n == 0 {
			m.gone, m.done = true, true
			return pl.ctl(unix.EPOLL_CTL_DEL, m.fd, i, 0)
		}
		now := time.Now()
		m.partial = append(m.partial, buf[:n]...)
		rest := m.partial
		for {
			j := bytes.IndexByte(rest, '\n')
			if j < 0 {
				break
			}
			line := rest[:j]
			rest = rest[j+1:]
			switch {
			case bytes.HasPrefix(line, floodPrefix):
				text := line[len(floodPrefix):]
				if string(text) == "end" {
					m.done = true
					continue
				}
				if !bytes.Equal(text, fairLine(m.next)) {
					return fmt.Errorf("member %d: got %.40q..., want the flood's line %d", i, line, m.next)
				}
				m.next++
				run.delivered++
			case m == prober && bytes.HasPrefix(line, answer):
				k, _ := strconv.Atoi(string(line[len(answer):]))
				if k != pingK || !waiting {
					return fmt.Errorf("prober: answer %q, waiting for ping %d", line, pingK)
				}
				run.rtts = append(run.rtts, now.Sub(pingAt))
				waiting = false
				if !floodDone.Load() {
					if err := ping(); err != nil {
						return err
					}
				}
			case bytes.HasPrefix(line, []byte("* ")) && bytes.HasSuffix(line, []byte("was put out: too slow to read")):
				// another member, put out; it counts itself when its connection ends
			}
		}
		m.partial = append(m.partial[:0], rest...)
		return nil
	}
	last := time.Now()
	for slices.ContainsFunc(ms, func(m *member) bool { return !m.done }) {
		if rss, err := srv.rss(); err == nil && rss > fairRSSCap {
			run.overCap = true
			break
		}
		evs, err := pl.wait(100 * time.Millisecond)
		if err != nil {
			return run, err
		}
		if len(evs) > 0 {
			last = time.Now()
		} else if time.Since(last) > fairWait {
			if err := srv.alive(); err != nil {
				return run, err
			}
			var where []string
			for i, m := range ms {
				if !m.done {
					where = append(where, fmt.Sprintf("member %d at line %d", i, m.next))
				}
			}
			return run, fmt.Errorf("no byte for any member for %v (flood: %d lines sent, done %v; waiting: %s; prober waiting for ping %d: %v)",
				fairWait, sent.Load(), floodDone.Load(), strings.Join(where, ", "), pingK, waiting)
		}
		for _, ev := range evs {
			if err := receive(int(ev.Fd)); err != nil {
				return run, err
			}
		}
	}
	run.peakRSS, _ = srv.peakRSS()
	// Stopping the server ends the flooder's blocked write when the run ended before the flood did: over
	// the cap, or with every reader put out while the room held the flooder back.
	interrupted := !floodDone.Load()
	srv.stop()
	if err := <-floodErr; err != nil && !interrupted {
		return run, fmt.Errorf("flooder: %w", err)
	}
	run.sent = int(sent.Load())
	if waiting {
		run.lost++
	}
	for _, m := range ms {
		if m.gone {
			run.putOut++
		} else if m.next == run.sent {
			run.complete++
		}
	}
	return run, nil
}

// peakRSS is the server's peak resident set size in bytes, from VmHWM in /proc/PID/status.
func (c *child) peakRSS() (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmHWM", c.cmd.Process.Pid)
}
