//go:build linux

package faults

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The flood (issue 20, item 2): one client streams 1000-byte lines as fast as TCP lets it, for at
// most floodFor or floodLines lines, whichever comes first. Against step06 this is the fault that
// edge-triggered epoll invites: a loop that drains a socket until EAGAIN (-readbudget 0) reads a
// client that never pauses for as long as it sends, serves nobody else meanwhile, and in the room
// queues every line it reads for every member within that one event.
const (
	floodFor   = 1500 * time.Millisecond
	floodLines = 40000
	floodChunk = 64 // lines per write
	floodRSS   = 64 << 20
	floodStall = 10 * time.Second // no byte for this long: the run has stopped moving
)

// floodArgs loosen two of the room's limits for the flood. serverArgs' -sndbuf 16384 lets a member's
// socket take at most 32 KiB a turn, and the room puts out a member whose socket is full with
// -maxqueue (64 KiB) queued; but one turn may read 64 KiB (step05, one read) to 256 KiB (step06, four
// reads) from the flooder, so with those limits the room puts out the members who read as fast as
// they can, as too slow, whenever their reader is a moment late. With the kernel's own buffer and
// 4 MiB of queue a member who reads keeps up; the memory bound still holds a loop to what the budget
// allows (a naive drain queues the whole flood for every member within one event).
func floodArgs(tg target) []string {
	if tg.chat {
		return []string{"-sndbuf", "0", "-maxqueue", "4194304"}
	}
	return []string{"-sndbuf", "0"}
}

// floodLine is the flooder's i-th line: 1000 bytes, without the newline.
func floodLine(i int) []byte {
	s := fmt.Appendf(nil, "flood %07d ", i)
	return append(s, bytes.Repeat([]byte("."), 1000-len(s))...)
}

// A flooder is the client that floods: it writes lines, in chunks, until its time or its lines run out.
type flooder struct {
	conn net.Conn
	sent atomic.Int64 // lines written so far
	done atomic.Bool  // set once the last line was written: the flood is over
}

func (f *flooder) run() error {
	defer f.done.Store(true) // over, whichever way it ends
	stop := time.Now().Add(floodFor)
	var chunk []byte
	for i := 0; i < floodLines && time.Now().Before(stop); {
		chunk = chunk[:0]
		for end := min(i+floodChunk, floodLines); i < end; i++ {
			chunk = append(append(chunk, floodLine(i)...), '\n')
		}
		f.conn.SetWriteDeadline(time.Now().Add(floodStall))
		if _, err := f.conn.Write(chunk); err != nil {
			return fmt.Errorf("flooder: write after %d lines: %w", f.sent.Load(), err)
		}
		f.sent.Store(int64(i))
	}
	// The flood is over; its last line tells the readers so (they need not guess from a silence).
	f.done.Store(true)
	f.conn.SetWriteDeadline(time.Now().Add(floodStall))
	if _, err := f.conn.Write([]byte("end\n")); err != nil {
		return fmt.Errorf("flooder: write its last line: %w", err)
	}
	return nil
}

// dialFlood connects a client the row does not script: it reads through a 64 KiB buffer, far faster
// than the scenario clients' line reader, as a member of a flooded room must.
func dialFlood(r *row, conns *[]net.Conn) (net.Conn, *bufio.Reader) {
	r.t.Helper()
	c, err := net.DialTimeout("tcp", r.srv.Addr, floodStall)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	*conns = append(*conns, c)
	return c, bufio.NewReaderSize(c, 64<<10)
}

// readLine reads one line, waiting at most floodStall.
func readLine(c net.Conn, br *bufio.Reader) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(floodStall))
	return br.ReadSlice('\n')
}

// expectFloodLine reads one line and compares it.
func (r *row) expectFloodLine(name string, c net.Conn, br *bufio.Reader, want string) {
	r.t.Helper()
	got, err := readLine(c, br)
	if err != nil || string(got) != want+"\n" {
		r.t.Fatalf("%s: got %q, %v; want %q", name, got, err, want)
	}
}

// flood plays the flood. Its clients are its own (not g1 and g2, whose scenario reader takes a byte
// at a time): chat, members h1 and h2 read everything, and h2 also sends /msg to itself, again and
// again, and waits for the answer; echo, the flooder reads its echo back and a prober p ping-pongs a
// line. The cell checks that a probe was answered while the flood was still being sent (the others
// are served during the flood, not after it), that every flooded line reached every reader exactly
// once and in order, that the server's peak resident memory (VmHWM) stayed under 64 MiB, and, once
// the flood's clients have left, the usual: no fd leaked, no spin, g1 and g2 served.
func flood(r *row) {
	r.baseline = r.srv.OpenFDs()
	var (
		conns              []net.Conn // the flood's clients
		f                  flooder
		probe              net.Conn
		probeR             *bufio.Reader
		wg                 sync.WaitGroup
		errMu              sync.Mutex
		errs               []error
		answered           = make(chan bool, 1) // a probe's answer came: was the flood still being sent?
		probeText          func(k int) string
		readersFor         int
		checkedPerReader   []int
		checkedPerReaderMu sync.Mutex
	)
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	if r.tg.chat {
		// h1, h2, then f join: guest1..guest3, c1..c3 in the trace.
		h1, h1r := dialFlood(r, &conns)
		r.expectFloodLine("h1", h1, h1r, welcome("guest1"))
		h2, h2r := dialFlood(r, &conns)
		r.expectFloodLine("h2", h2, h2r, welcome("guest2"))
		r.expectFloodLine("h1", h1, h1r, "* guest2 joined")
		fc, fr := dialFlood(r, &conns)
		r.expectFloodLine("f", fc, fr, welcome("guest3"))
		r.expectFloodLine("h1", h1, h1r, "* guest3 joined")
		r.expectFloodLine("h2", h2, h2r, "* guest3 joined")
		r.accepted, r.guests = 3, 3
		f.conn, probe, probeR = fc, h2, h2r
		probeText = func(k int) string { return fmt.Sprintf("/msg guest2 ping %d", k) }
		readersFor = 2
		checkedPerReader = make([]int, 2)
		for i, h := range []struct {
			c  net.Conn
			br *bufio.Reader
		}{{h1, h1r}, {h2, h2r}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := readRoom(h.c, h.br, &f, i == 1, answered)
				checkedPerReaderMu.Lock()
				checkedPerReader[i] = n
				checkedPerReaderMu.Unlock()
				if err != nil {
					fail(fmt.Errorf("h%d: %w", i+1, err))
				}
			}()
		}
	} else {
		// f, then the prober p: c1 and c2 in the trace. f reads its echo in a goroutine of its own.
		fc, fr := dialFlood(r, &conns)
		p, pr := dialFlood(r, &conns)
		r.accepted = 2
		f.conn, probe, probeR = fc, p, pr
		probeText = func(k int) string { return fmt.Sprintf("ping %d", k) }
		readersFor = 1
		checkedPerReader = make([]int, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := readEcho(fc, fr, &f)
			checkedPerReader[0] = n
			if err != nil {
				fail(fmt.Errorf("f, reading its echo: %w", err))
			}
		}()
	}
	flooded := make(chan error, 1)
	go func() { flooded <- f.run() }()

	// Probe while the flood runs: one at a time, each waiting for its answer.
	probes, during := 0, 0
	for !f.done.Load() {
		probes++
		probe.SetWriteDeadline(time.Now().Add(floodStall))
		if _, err := probe.Write([]byte(probeText(probes) + "\n")); err != nil {
			r.t.Fatalf("probe %d: %v", probes, err)
		}
		if r.tg.chat {
			// h2's reader sees the answer among the flood's lines and says when it came.
			select {
			case mid := <-answered:
				if mid {
					during++
				}
			case <-time.After(floodStall + floodFor):
				errMu.Lock()
				r.t.Fatalf("probe %d: no answer within %v (readers: %v)", probes, floodStall+floodFor, errs)
			}
			continue
		}
		r.expectFloodLine("p", probe, probeR, probeText(probes))
		if !f.done.Load() {
			during++
		}
	}
	if err := <-flooded; err != nil {
		r.t.Fatal(err)
	}
	wg.Wait()
	for _, err := range errs {
		r.t.Error(err)
	}
	if r.t.Failed() {
		r.t.FailNow()
	}
	sent := int(f.sent.Load())
	for i, n := range checkedPerReader {
		if n != sent {
			r.t.Errorf("reader %d of %d checked %d lines, %d were flooded", i+1, readersFor, n, sent)
		}
	}
	if during == 0 {
		r.t.Errorf("%d probes, none answered while the flood of %d lines was being sent: one client owned the loop", probes, sent)
	}
	r.fig.want, r.fig.got = sent*readersFor, 0
	for _, n := range checkedPerReader {
		r.fig.got += n
	}
	r.fig.peakRSS = statusBytes(r.t, r.srv.Pid(), "VmHWM")
	if rss := r.fig.peakRSS; rss > floodRSS {
		r.t.Errorf("the server's peak resident memory was %d MiB (bound %d MiB)", rss>>20, floodRSS>>20)
	}
	r.t.Logf("%d lines of 1000 bytes flooded; %d of %d probes answered during the flood; peak RSS %d MiB",
		sent, during, probes, statusBytes(r.t, r.srv.Pid(), "VmHWM")>>20)
	// No trace line is asked for: whether a turn finds more than step06's four reads waiting depends
	// on how far ahead the flooder got, which a loaded machine decides (step06's burst-owed golden
	// shows the budget spent, scripted).
	r.cell.evidence = append(r.cell.evidence, "probes answered mid-flood; every line to every reader; peak RSS under 64 MiB")

	// The flood's clients leave; the server gives back their fds, does not spin, and serves newcomers.
	for _, c := range conns {
		c.Close()
	}
	r.waitCount(regexp.MustCompile(`^close\s+c\d+ \(`), len(conns), floodStall)
	// The trace says "close" when a handler finishes a client; the loop closes the socket at the end
	// of that turn, so the count is awaited too.
	waitSockets(r, 1, floodStall)
	r.setup()
	r.idle()
	r.served()
}

// readRoom reads a member's lines during the flood, to the flooder's last line ("end"): each line
// of the flood must be the flooder's next line (none missing, none twice). The prober also sees the
// answers to its /msg and reports on answered whether the flood was still being sent. It returns the
// lines checked.
func readRoom(c net.Conn, br *bufio.Reader, f *flooder, prober bool, answered chan<- bool) (int, error) {
	next := 0
	prefix := []byte("guest3: ")
	ping := []byte("guest2 (private): ping ")
	for {
		line, err := readLine(c, br)
		if err != nil {
			return next, fmt.Errorf("after %d of the flood's lines (%d sent): %w", next, f.sent.Load(), err)
		}
		line = line[:len(line)-1]
		switch {
		case bytes.Equal(line, []byte("guest3: end")):
			return next, nil
		case bytes.HasPrefix(line, prefix):
			if want := floodLine(next); !bytes.Equal(line[len(prefix):], want) {
				return next, fmt.Errorf("got %.40q..., want the flood's line %d", line, next)
			}
			next++
		case prober && bytes.HasPrefix(line, ping):
			select {
			case answered <- !f.done.Load():
			default: // an answer the test no longer waits for
			}
		default:
			return next, fmt.Errorf("got %.60q after %d of the flood's lines", line, next)
		}
	}
}

// readEcho reads the flooder's echo to its last line ("end"), checking each line, in order.
func readEcho(c net.Conn, br *bufio.Reader, f *flooder) (int, error) {
	next := 0
	for {
		line, err := readLine(c, br)
		if err != nil {
			return next, fmt.Errorf("after %d lines (%d sent): %w", next, f.sent.Load(), err)
		}
		line = line[:len(line)-1]
		if string(line) == "end" {
			return next, nil
		}
		if want := floodLine(next); !bytes.Equal(line, want) {
			return next, fmt.Errorf("line %d came back as %.40q...", next, line)
		}
		next++
	}
}

// sockets counts the sockets process pid holds.
func sockets(pid int) int {
	n := 0
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if what, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); strings.HasPrefix(what, "socket:") {
			n++
		}
	}
	return n
}
