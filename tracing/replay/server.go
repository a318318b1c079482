//go:build unix

// Package replay runs a step program as a child process, drives a scenario against it with real TCP
// clients over loopback, and records the transcript: the server's trace with the clients' actions woven
// in where they happened. Between actions it waits for the server to catch up (a new wait line in the
// trace, then every thread of the server asleep), never for a fixed time, so a transcript is the same on
// every run.
package replay

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Server is a running step program.
type Server struct {
	Addr string // where it listens, from its "listening on ADDR" line on stderr

	cmd    *exec.Cmd
	traceR int // read end of the pipe that is the server's stdout (nonblocking)
	stderr *lineLog

	mu       sync.Mutex // guards the fields below: every read of traceR happens under it
	trace    []byte
	lines    int // complete lines in trace
	lastLine int // where the last complete line starts

	exited  chan struct{}
	exitErr error
}

var listening = regexp.MustCompile(`listening on (\S+)`)

// Start runs binary with args (plus -addr 127.0.0.1:0 unless args set -addr) and waits until it says
// where it listens.
func Start(binary string, args ...string) (*Server, error) {
	if !hasFlag(args, "addr") {
		args = append([]string{"-addr", "127.0.0.1:0"}, args...)
	}
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	unix.CloseOnExec(p[0]) // the child gets the write end as its stdout, and nothing else of ours
	unix.CloseOnExec(p[1])
	w := os.NewFile(uintptr(p[1]), "trace")
	s := &Server{traceR: p[0], stderr: newLineLog(), exited: make(chan struct{})}
	s.cmd = exec.Command(binary, args...)
	s.cmd.Stdout = w
	s.cmd.Stderr = s.stderr
	err := s.cmd.Start()
	w.Close() // the child has its copy; ours would keep the pipe open after the child exits
	if err != nil {
		unix.Close(p[0])
		return nil, err
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		s.Kill()
		return nil, err
	}
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.exited)
	}()
	go s.drainForever()
	line, err := s.stderr.waitFor(listening, s.exited, 30*time.Second)
	if err != nil {
		s.Kill()
		return nil, fmt.Errorf("%s did not report its address: %v\n%s", filepath.Base(binary), err, s.Stderr())
	}
	s.Addr = listening.FindStringSubmatch(line)[1]
	return s, nil
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// Lines is the number of complete trace lines read so far.
func (s *Server) Lines() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked()
	return s.lines
}

func (s *Server) lastLineLocked() string {
	if s.lines == 0 {
		return "(no trace yet)"
	}
	return strings.TrimSuffix(string(s.trace[s.lastLine:]), "\n")
}

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// copyLines writes the complete lines of the trace from byte offset from on, and says how many bytes.
func (s *Server) copyLines(w *strings.Builder, from int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked()
	end := bytes.LastIndexByte(s.trace, '\n') + 1
	if end <= from {
		return 0
	}
	w.Write(s.trace[from:end])
	return end - from
}

// Trace returns the trace read so far.
func (s *Server) Trace() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked()
	return string(s.trace)
}

// Stderr returns what the server wrote to stderr.
func (s *Server) Stderr() string { return s.stderr.String() }

// drainForever keeps reading the trace, so that a server that talks a lot never blocks on a full pipe
// while nobody is settling.
func (s *Server) drainForever() {
	for !s.Exited() {
		s.mu.Lock()
		if s.traceR < 0 {
			s.mu.Unlock()
			return
		}
		fds := []unix.PollFd{{Fd: int32(s.traceR), Events: unix.POLLIN}}
		s.drainLocked()
		s.mu.Unlock()
		unix.Poll(fds, 100) // wakes on output; the bound lets it notice the end
	}
}

// drainLocked reads whatever the pipe holds; it reports how many bytes that was.
func (s *Server) drainLocked() int {
	var buf [64 << 10]byte
	total := 0
	for {
		n, err := unix.Read(s.traceR, buf[:])
		if n > 0 {
			s.trace = append(s.trace, buf[:n]...)
			if k := bytes.Count(buf[:n], []byte{'\n'}); k > 0 {
				s.lines += k
				last := bytes.LastIndexByte(s.trace, '\n')
				s.lastLine = bytes.LastIndexByte(s.trace[:last], '\n') + 1
			}
			total += n
			continue
		}
		if err == unix.EINTR {
			continue
		}
		return total // EAGAIN: empty for now; 0: the server closed its stdout
	}
}

// Exited reports whether the server has exited.
func (s *Server) Exited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// Settle waits until the server has caught up with what the clients did: if woke, it must first have
// written a trace line at index >= from (it reacted); then every thread of the server must be asleep
// (blocked in a call, waiting for something from outside) with nothing more in the pipe. Usually the
// server is then blocked in its wait; a server stuck in a blocking write has settled too, which is how a
// scenario can show one. A server that has exited has settled. It gives up after within.
func (s *Server) Settle(from int, woke bool, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		// Look at the threads first, then at the pipe. A server blocked writing to a full pipe looks
		// asleep too, but then the pipe held bytes at that moment, which are read after it: counting
		// every byte received since before the look (not just what this drain read, since
		// drainForever may have read them) tells the two apart.
		s.mu.Lock()
		before := len(s.trace)
		s.mu.Unlock()
		asleep := s.Exited() || allAsleep(s.Pid())
		s.mu.Lock()
		s.drainLocked()
		fresh := len(s.trace) - before
		lines, last := s.lines, s.lastLineLocked()
		partial := len(s.trace) > 0 && s.trace[len(s.trace)-1] != '\n'
		s.mu.Unlock()
		if s.Exited() && fresh == 0 {
			return nil
		}
		reacted := !woke || lines > from
		if asleep && fresh == 0 && !partial && reacted {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server did not settle within %v (reacted=%v, asleep=%v, still tracing=%v); last trace line: %s",
				within, reacted, asleep, fresh > 0, last)
		}
		// Wait for more trace output, or 1 ms for the server's threads to go to sleep.
		fds := []unix.PollFd{{Fd: int32(s.traceR), Events: unix.POLLIN}}
		unix.Poll(fds, 1)
	}
}

// allAsleep reports whether every thread of process pid sleeps (state S: blocked until something
// happens). A Go program never has a runnable goroutine while all its threads sleep, so this means the
// program waits for the outside world. On systems without /proc it cannot tell and says yes: new trace
// lines alone then pace the replay.
func allAsleep(pid int) bool {
	states, err := threadStates(pid)
	if err != nil {
		return true
	}
	for _, state := range states {
		if state != 'S' && state != 'Z' {
			return false
		}
	}
	return true
}

// threadStates returns the state letter of each thread of process pid, from /proc/PID/task/TID/stat
// (R running, S sleeping, T stopped, Z zombie, ...).
func threadStates(pid int) ([]byte, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	var states []byte
	for _, t := range tasks {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name()))
		if err != nil {
			continue // the thread just ended
		}
		// The state follows the command name, which is in parentheses and may hold spaces.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) {
			continue
		}
		states = append(states, stat[i+2])
	}
	return states, nil
}

// WaitStopped waits up to within until every thread of the server is stopped (state T), as after
// SIGSTOP: the signal is delivered to each thread in its own time, and there is no event to wait on,
// so it polls /proc every millisecond.
func (s *Server) WaitStopped(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		states, err := threadStates(s.Pid())
		if err != nil {
			return err
		}
		stopped := bytes.Count(states, []byte{'T'})
		if stopped == len(states) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server did not stop within %v (%d of %d threads stopped)", within, stopped, len(states))
		}
		time.Sleep(time.Millisecond)
	}
}

// Signal sends the server a signal.
func (s *Server) Signal(sig unix.Signal) error { return unix.Kill(s.Pid(), sig) }

// Wait waits up to within for the server to exit and returns its exit status.
func (s *Server) Wait(within time.Duration) (int, error) {
	select {
	case <-s.exited:
	case <-time.After(within):
		return -1, fmt.Errorf("server still running after %v", within)
	}
	var exit *exec.ExitError
	if errors.As(s.exitErr, &exit) {
		return exit.ExitCode(), nil
	}
	return 0, s.exitErr
}

// Kill stops the server if it still runs and releases the pipe.
func (s *Server) Kill() {
	if s.cmd.Process != nil && !s.Exited() {
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.mu.Lock()
	if s.traceR >= 0 {
		s.drainLocked()
		unix.Close(s.traceR)
		s.traceR = -1
	}
	s.mu.Unlock()
}

// lineLog collects a child's stderr and lets a caller wait for a line matching a pattern.
type lineLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *lineLog) waitFor(re *regexp.Regexp, exited <-chan struct{}, within time.Duration) (string, error) {
	timeout := time.After(within)
	for {
		l.mu.Lock()
		for _, line := range strings.SplitAfter(l.buf.String(), "\n") {
			if strings.HasSuffix(line, "\n") && re.MatchString(line) {
				l.mu.Unlock()
				return line, nil
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-exited:
			return "", errors.New("it exited")
		case <-timeout:
			return "", fmt.Errorf("nothing after %v", within)
		}
	}
}

// OpenFDs counts the server's open file descriptors (from /proc/PID/fd; -1 where there is no /proc).
// A test compares it before and after a client comes and goes: a leak shows as a difference.
func (s *Server) OpenFDs() int {
	fds := s.FDs()
	if fds == nil {
		return -1
	}
	return len(fds)
}

// FDs returns the numbers of the server's open file descriptors, in increasing order (nil where there
// is no /proc).
func (s *Server) FDs() []int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.Pid()))
	if err != nil {
		return nil
	}
	fds := []int{}
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	slices.Sort(fds)
	return fds
}

// CPUTime is the CPU time the server has used so far, user plus system (from /proc/PID/stat, in clock
// ticks of 10 ms; -1 where there is no /proc). A busy loop shows as CPU time growing while nothing happens.
func (s *Server) CPUTime() time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.Pid()))
	if err != nil {
		return -1
	}
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	// After the name: state is field 3 of the man page, utime 14 and stime 15.
	var ticks int64
	for _, k := range []int{14, 15} {
		var v int64
		fmt.Sscan(f[k-3], &v)
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
