//go:build linux

package grade

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/scenario"
)

// A busy loop is a server that wants more than half a core while the scenario waits: each window of
// busyWindow, the watchdog compares what it wanted (demand) with the wall time, and two such windows
// in a row make a busy loop.
const busyWindow = time.Second

// play runs one check against the binary and says what happened.
func (g *grader) play(ctx context.Context, bin string, c check) *Result {
	r := &Result{Check: c.name}
	sc, err := scenario.ParseFile(c.scenario)
	if err != nil {
		r.Verdict = "cannot read the scenario: " + err.Error()
		return r
	}
	if rel, err := filepath.Rel(g.o.Root, c.scenario); err == nil {
		sc.Name = rel // the transcript's "!!" line names it, the same on every machine
	}
	if g.o.Stall > 0 {
		// Only the waits for an answer: an EOF or an exit may wait on the server's own timers.
		for i, st := range sc.Steps {
			if slices.Contains([]string{"send", "expect", "expect-line"}, st.Verb) && st.Within > g.o.Stall {
				sc.Steps[i].Within = g.o.Stall
			}
		}
	}
	ctx, over := context.WithCancelCause(ctx)
	ctx, stop := context.WithTimeout(ctx, g.o.Timeout)
	w := &watchdog{started: make(chan struct{}), done: make(chan struct{})}
	defer func() { over(errRunOver); stop(); <-w.done }()
	go w.watch(ctx)

	s, err := replay.OpenWith(bin, func(p *os.Process) {
		if err := limit(p.Pid, g.o.Timeout); err != nil {
			p.Kill() // unlimited, it is not run
		}
		w.proc = p
		close(w.started)
	}, sc.Args...)
	if w.proc == nil { // it never ran
		close(w.started)
	}
	if err != nil {
		r.Transcript, r.Stderr = "!! "+firstLine(err.Error())+"\n", stderrOf(err)
		return g.verdict(r, c, w, err, exitOf(err), r.Stderr)
	}
	pid := s.Server().Pid()
	baseline := sockets(pid)
	err = s.Play(sc)
	if err == nil {
		err = s.Server().Settle(0, false, replay.SettleWithin)
	}
	exit := ""
	if err != nil {
		f := s.Failure(err)
		exit = f.Exit
		r.Transcript = s.Transcript() + "!! " + firstLine(err.Error()) + "\n"
	} else {
		r.Transcript = s.Transcript()
		if s.Server().Exited() && !slices.ContainsFunc(sc.Steps, func(st scenario.Step) bool { return st.Verb == "expect-exit" }) {
			// It exited after the scenario's last action, which the replayer does not count as a failure.
			exit = s.Server().ExitStatus()
		} else if !s.Server().Exited() {
			// B2: every client the scenario left open leaves now, and the server must give back every
			// socket it held for them.
			held, quiet, lerr := closeAll(s, sc)
			if !quiet {
				// Still talking with nothing to answer: give the watchdog the time it takes to judge.
				select {
				case <-w.done:
				case <-time.After(3 * busyWindow):
				}
			}
			switch {
			case s.Server().Ended():
				exit = s.Server().ExitStatus()
				err = fmt.Errorf("the server exited when the clients closed (%s)", exit)
			case lerr != nil:
				err = lerr
			case baseline >= 0 && held > baseline:
				r.Verdict = fmt.Sprintf("leaked fds (%d sockets)", held-baseline)
				if held-baseline == 1 {
					r.Verdict = "leaked fds (1 socket)"
				}
			}
		}
	}
	res := s.Close()
	r.Stderr = res.Stderr
	return g.verdict(r, c, w, err, exit, res.Stderr)
}

// closeAll closes the scenario's clients that are still open and waits for the server to settle; it
// returns how many sockets the server holds then, and whether it stayed quiet: a server that traces
// more lines while nothing happens is not idle, however asleep it looked.
func closeAll(s *replay.Session, sc *scenario.Scenario) (held int, quiet bool, err error) {
	for _, st := range sc.Steps {
		if c := s.Client(st.Client); st.Verb == "connect" && c != nil {
			c.Close() // a second close of one the scenario closed does nothing
		}
	}
	// Each close has woken the server before Close returned (loopback delivers the FIN at once), so
	// the server is asleep again only once it has handled them all. A server that floods a full pipe
	// can look asleep at the moment the replayer looks: a second look tells.
	srv := s.Server()
	if err := srv.Settle(0, false, replay.SettleWithin); err != nil {
		return 0, false, fmt.Errorf("after the clients closed: %w", err)
	}
	lines := srv.Lines()
	if err := srv.Settle(0, false, replay.SettleWithin); err != nil {
		return 0, false, fmt.Errorf("after the clients closed: %w", err)
	}
	return sockets(srv.Pid()), srv.Lines() == lines, nil
}

// verdict fills in the result's cell, from the worst thing that happened: the server was killed
// (busy, or past the run's time limit), it exited, a wait's bound expired, its transcript differs, it
// leaked fds.
func (g *grader) verdict(r *Result, c check, w *watchdog, err error, exit, stderr string) *Result {
	leak := r.Verdict
	r.Verdict = ""
	if want, rerr := os.ReadFile(c.golden); rerr != nil {
		r.Verdict = "no golden: " + rerr.Error()
		return r
	} else {
		r.Diff, r.Differing = compare(c, string(want), r.Transcript)
	}
	r.Transcript, r.Diff = cut(r.Transcript), cut(r.Diff)
	switch why := w.why(); {
	case why == killedBusy:
		r.Verdict = "busy loop"
	case why == killedLimit:
		r.Verdict = fmt.Sprintf("hung after %d s", int(g.o.Timeout.Seconds()))
	case why == killedInterrupt:
		r.Verdict = "interrupted"
	case exit != "":
		r.Verdict = fmt.Sprintf("crashed (%s%s)", exit, lastWords(stderr))
	case err != nil && bound(err) > 0:
		r.Verdict = fmt.Sprintf("hung after %d s", int(bound(err).Seconds()))
	case r.Differing > 0:
		r.Verdict = fmt.Sprintf("%d lines differ", r.Differing)
		if r.Differing == 1 {
			r.Verdict = "1 line differs"
		}
	case leak != "":
		r.Verdict = leak
	default:
		r.Verdict = "pass"
	}
	if r.Differing > 0 && leak != "" && !strings.Contains(r.Verdict, "leaked") {
		r.Verdict += ", " + leak
	}
	return r
}

// compare compares the transcript with the golden one as the step's tests do, and returns the diff
// and the number of its "-" and "+" lines.
func compare(c check, want, got string) (string, int) {
	if c.prefix {
		wl := tracing.Lines(want)
		if len(wl) > 0 {
			last := wl[len(wl)-1] + "\n"
			if i := strings.Index(got, last); i >= 0 {
				got = got[:i+len(last)]
			}
		}
	}
	d := tracing.UnifiedDiff("golden", "student", tracing.Without(want, c.leave...), tracing.Without(got, c.leave...))
	n := 0
	for i, l := range tracing.Lines(d) {
		if i >= 2 && (strings.HasPrefix(l, "-") || strings.HasPrefix(l, "+")) {
			n++
		}
	}
	return d, n
}

var within = regexp.MustCompile(`(?:within|nothing after) (\d[0-9.a-zµ]*s)\b`)

// bound is the bound of the wait that failed, from the replayer's message ("... within 10s", or
// "nothing after 30s" from a server that never said where it listens), or 0 if the failure was not a
// wait that ran out.
func bound(err error) time.Duration {
	m := within.FindStringSubmatch(err.Error())
	if m == nil {
		return 0
	}
	d, _ := time.ParseDuration(m[1])
	return d
}

// lastWords is the line of a crashed server's stderr that says why, for the table: a Go panic's first
// line, or else the last line (not the one that says where it listens).
func lastWords(stderr string) string {
	lines := tracing.Lines(stderr)
	for _, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			return ": " + l
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.Contains(l, "listening on ") {
			return ": " + l
		}
	}
	return ""
}

// exitOf and stderrOf read a failure to start.
func exitOf(err error) string {
	var f *replay.Failure
	if errors.As(err, &f) {
		return f.Exit
	}
	if m := regexp.MustCompile(`it exited \(([^)]*)\)`).FindStringSubmatch(err.Error()); m != nil {
		return m[1]
	}
	return ""
}

func stderrOf(err error) string {
	var f *replay.Failure
	if errors.As(err, &f) {
		return f.Stderr
	}
	_, words, _ := strings.Cut(err.Error(), "its stderr ended with:\n")
	return words
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// Why the watchdog killed a server.
const (
	notKilled = iota
	killedBusy
	killedLimit
	killedInterrupt
)

// A watchdog kills a server that spins (a busy loop), or that outlives its run's time limit, or when
// the grader is interrupted.
type watchdog struct {
	started chan struct{} // closed once proc is set, or once it is known that the server never ran
	proc    *os.Process
	done    chan struct{} // closed when watch returns
	mu      sync.Mutex
	killed  int
}

func (w *watchdog) watch(ctx context.Context) {
	defer close(w.done)
	select {
	case <-w.started:
	case <-ctx.Done():
		<-w.started // the server is being started: it is killed below, or never ran
	}
	if w.proc == nil {
		return
	}
	pid := w.proc.Pid
	tick := time.NewTicker(busyWindow)
	defer tick.Stop()
	last, at := demand(pid), time.Now()
	busy := 0 // windows in a row in which the server wanted more than half a core
	for {
		select {
		case <-ctx.Done():
			switch cause := context.Cause(ctx); {
			case errors.Is(cause, errRunOver): // the run ended by itself
			case errors.Is(cause, context.DeadlineExceeded):
				w.kill(killedLimit)
			default: // the grader was interrupted
				w.kill(killedInterrupt)
			}
			return
		case now := <-tick.C:
			d := demand(pid)
			// Two windows in a row: on a loaded machine, a sleeping server's many short wake-ups can
			// each wait long for a CPU, and add up to a spike in one window; a loop spins in every one.
			if d-last > now.Sub(at)/2 {
				busy++
			} else {
				busy = 0
			}
			if busy == 2 {
				w.kill(killedBusy)
				return
			}
			last, at = d, now
		}
	}
}

// errRunOver is why a run's context ends when the run ended by itself.
var errRunOver = errors.New("the run is over")

// kill kills the server, once, and remembers why. A server that has exited already is left alone: its
// process handle cannot reach another process that took its pid.
func (w *watchdog) kill(why int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.killed == notKilled && w.proc.Kill() == nil {
		w.killed = why
	}
}

func (w *watchdog) why() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.killed
}

// maxKept bounds a transcript or a diff kept in the report: a spinning server's runs to megabytes.
const maxKept = 1 << 20

// cut keeps text whole if it is short, else its first and last maxKept/2 bytes, cut between lines.
func cut(text string) string {
	if len(text) <= maxKept {
		return text
	}
	head := text[:strings.LastIndexByte(text[:maxKept/2], '\n')+1]
	tail := text[len(text)-maxKept/2:]
	tail = tail[strings.IndexByte(tail, '\n')+1:]
	return fmt.Sprintf("%s... %d bytes cut ...\n%s", head, len(text)-len(head)-len(tail), tail)
}
