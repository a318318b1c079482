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
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Server is a running step program.
type Server struct {
	Addr string // where it listens, from its "listening on ADDR" line on stderr

	cmd    *exec.Cmd
	traceR int // read end of the pipe that is the server's stdout (nonblocking)
	stderr *lineLog

	mu      sync.Mutex // guards the fields below: every read of traceR happens under it
	trace   *clip      // the complete lines read (a runaway server's trace is cut in the middle)
	fresh   *clip      // complete lines not yet taken into a session's transcript (nil: no session)
	partial []byte     // the start of a line whose end has not arrived yet
	midLine bool       // the last byte read was not a newline
	read    int64      // bytes read in all
	lines   int        // complete lines read in all
	last    string     // the last complete line (its start, if long)

	exited  chan struct{}
	exitErr error

	onLines func(lines string) // with Watch: given every complete line read, in order
	group   bool               // with Watch: the server leads a process group of its own
}

var listening = regexp.MustCompile(`listening on (\S+)`)

// How much of its trace a Server holds (and a Session of its transcript, which a failed replay keeps
// in a file): a server stuck in a loop can print millions of lines, and only their beginning and end
// help. Every trace of a lesson or test is far shorter than the head; a test that counts lines of a
// trace (the FD_SETSIZE one's is 8 MB) needs every line, hence the larger bound for the trace.
const (
	KeepHead  = 4 << 20 // bytes of a transcript's beginning kept
	KeepTail  = 4 << 20 // bytes of a transcript's end kept
	traceHead = 32 << 20
	traceTail = 16 << 20
	// maxPartial bounds a line that never ends: past it, the bytes go on as if they were lines.
	maxPartial = 64 << 10
)

// Start runs binary with args (plus -addr 127.0.0.1:0 unless args set -addr) and waits until it says
// where it listens.
func Start(binary string, args ...string) (*Server, error) {
	return start(binary, false, nil, args)
}

// Watch is Start for a live view of the server: lines is given the trace's complete lines as they are
// read (one or more lines at a time, in order, from whichever goroutine read them; it must not block
// nor call the Server), and the server leads a process group of its own, which Kill ends whole, so
// that nothing it started outlives the view.
func Watch(binary string, lines func(string), args ...string) (*Server, error) {
	return start(binary, false, nil, args, func(s *Server) { s.onLines, s.group = lines, true })
}

// Done is closed when the server has exited.
func (s *Server) Done() <-chan struct{} { return s.exited }

// start is Start; with feed, the server also keeps the lines a session has not yet taken. started, if
// not nil, is given the process as soon as it runs, before start waits for its address. Each of opts,
// if any, sets up the Server before the process starts.
func start(binary string, feed bool, started func(*os.Process), args []string, opts ...func(*Server)) (*Server, error) {
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
	s := &Server{traceR: p[0], stderr: newLineLog(listening), trace: newClip(traceHead, traceTail), exited: make(chan struct{})}
	if feed {
		s.fresh = newClip(KeepHead, KeepTail)
	}
	for _, o := range opts {
		o(s)
	}
	s.cmd = exec.Command(binary, args...)
	if s.group {
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	s.cmd.Stdout = w
	s.cmd.Stderr = s.stderr
	err := s.cmd.Start()
	w.Close() // the child has its copy; ours would keep the pipe open after the child exits
	if err != nil {
		unix.Close(p[0])
		return nil, err
	}
	if started != nil {
		started(s.cmd.Process) // before the goroutine below can reap it: its pid is still its own
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
	line, err := s.stderr.waitFor(s.exited, 30*time.Second)
	if err != nil {
		exited := s.Exited() // before Kill, which ends it too
		s.Kill()
		if exited {
			err = fmt.Errorf("it exited (%s)", s.ExitStatus())
		}
		return nil, fmt.Errorf("%s did not report its address: %v; %s", filepath.Base(binary), err, lastWords(s.Stderr()))
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
	return s.last
}

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// takeLines writes the complete trace lines read since the last call (with the middle cut out if
// there were too many) to w and, with whole, returns the complete lines of the trace up to them.
func (s *Server) takeLines(w *clip, whole bool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked()
	s.fresh.moveTo(w)
	s.fresh = newClip(KeepHead, KeepTail)
	if !whole {
		return ""
	}
	return s.trace.String()
}

// Trace returns the trace read so far. Past 48 MiB, its middle is cut out: "... N lines cut ...".
func (s *Server) Trace() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked()
	return s.trace.String() + string(s.partial)
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
			s.add(buf[:n])
			total += n
			continue
		}
		if err == unix.EINTR {
			continue
		}
		return total // EAGAIN: empty for now; 0: the server closed its stdout
	}
}

// add files bytes read from the trace: complete lines go into the trace (and the session's feed),
// the start of an unfinished line waits for its end.
func (s *Server) add(p []byte) {
	s.read += int64(len(p))
	s.midLine = p[len(p)-1] != '\n'
	end := bytes.LastIndexByte(p, '\n') + 1
	if end == 0 {
		s.partial = append(s.partial, p...)
		if len(s.partial) > maxPartial {
			s.keep(s.partial)
			s.partial = s.partial[:0]
		}
		return
	}
	s.lines += bytes.Count(p[:end], []byte{'\n'})
	s.partial = append(s.partial, p[:end]...)
	lines := s.partial[:len(s.partial)-1]
	last := lines[bytes.LastIndexByte(lines, '\n')+1:]
	s.last = string(last[:min(len(last), maxExcerptLine)])
	s.keep(s.partial)
	s.partial = append(s.partial[:0], p[end:]...)
}

func (s *Server) keep(lines []byte) {
	s.trace.Write(lines)
	if s.onLines != nil {
		s.onLines(string(lines))
	}
	if s.fresh != nil {
		s.fresh.Write(lines)
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
		before := s.read
		s.mu.Unlock()
		asleep := s.Exited() || allAsleep(s.Pid())
		s.mu.Lock()
		s.drainLocked()
		fresh := s.read - before
		lines, last := s.lines, s.lastLineLocked()
		partial := s.midLine
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
		if s.group {
			unix.Kill(-s.cmd.Process.Pid, unix.SIGKILL) // the server and whatever it started
		} else {
			s.cmd.Process.Kill()
		}
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

// lineLog collects a child's stderr, its beginning and end if it says a lot, and lets a caller wait
// for the first line that matches a pattern.
type lineLog struct {
	mu      sync.Mutex
	text    *clip
	watch   *regexp.Regexp
	partial []byte        // the unfinished line, while no line has matched
	found   string        // the first line that matched
	changed chan struct{} // closed and replaced on every write
}

func newLineLog(watch *regexp.Regexp) *lineLog {
	return &lineLog{text: newClip(64<<10, 64<<10), watch: watch, changed: make(chan struct{})}
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.text.Write(p)
	// Each line is matched once, as it ends, so a child that floods its stderr costs no more than it
	// writes.
	for rest := p; l.found == "" && len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			l.partial = append(l.partial, rest[:min(len(rest), max(0, maxPartial-len(l.partial)))]...)
			break
		}
		line := string(append(l.partial, rest[:i+1]...))
		l.partial, rest = l.partial[:0], rest[i+1:]
		if l.watch.MatchString(line) {
			l.found = line
		}
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.String()
}

// waitFor waits for the first line that matches the pattern.
func (l *lineLog) waitFor(exited <-chan struct{}, within time.Duration) (string, error) {
	timeout := time.After(within)
	for {
		l.mu.Lock()
		found, changed := l.found, l.changed
		l.mu.Unlock()
		if found != "" {
			return found, nil
		}
		select {
		case <-changed:
		case <-exited:
			return "", errors.New("it exited")
		case <-timeout:
			return "", fmt.Errorf("nothing after %v", within)
		}
	}
}

// stderrLines is how many of its last stderr lines a failure shows of a server.
const stderrLines = 5

// lastLines returns the last n lines of text.
func lastLines(text string, n int) string {
	text = strings.TrimSuffix(text, "\n")
	start := len(text)
	for range n {
		start = strings.LastIndexByte(text[:start], '\n')
		if start < 0 {
			break
		}
	}
	return text[start+1:] + "\n"
}

// lastWords quotes the last lines of a server's stderr for a message, indented.
func lastWords(stderr string) string {
	if strings.TrimSpace(stderr) == "" {
		return "it wrote nothing to stderr"
	}
	text := strings.TrimSuffix(lastLines(stderr, stderrLines), "\n")
	return "its stderr ended with:\n    " + strings.ReplaceAll(text, "\n", "\n    ")
}

func procExists() bool {
	_, err := os.Stat("/proc/self/stat")
	return err == nil
}

// ExitStatus says how the server ended ("exit status 1", "signal: killed"), or "" while it runs.
func (s *Server) ExitStatus() string {
	if !s.Exited() {
		return ""
	}
	if s.exitErr == nil {
		return "exit status 0"
	}
	return s.exitErr.Error()
}

// Ended reports whether the server has exited, waiting for it if it is exiting. The kernel closes an
// exiting process's sockets before the process is gone, so a client can see the connection close
// while the server still exists: this is what tells such a crash from a server that closed the
// connection. The sign is the PF_EXITING flag or the zombie state in /proc/PID/stat; without /proc, it
// only knows about an exit already reaped.
func (s *Server) Ended() bool {
	if s.Exited() {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.Pid()))
	switch {
	case errors.Is(err, os.ErrNotExist) && procExists():
		// Reaped already: only the wait for its stderr to be read is left.
	case err != nil:
		return false
	default:
		// After the name in parentheses: state is field 3 of proc(5), flags field 9.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		const pfExiting = 0x4
		flags, _ := strconv.ParseUint(f[9-3], 10, 64)
		if f[0] != "Z" && f[0] != "X" && flags&pfExiting == 0 {
			return false
		}
	}
	select {
	case <-s.exited:
		return true
	case <-time.After(SettleWithin): // exiting takes the kernel microseconds: this is only a backstop
		return false
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
