//go:build unix

package replay

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing/scenario"
)

// SettleWithin bounds how long the replayer waits for the server to catch up after one action.
const SettleWithin = 10 * time.Second

// Result is what a replay produced.
type Result struct {
	// Transcript is the server's trace with the clients' actions woven in: ">> c1 send ..." where a client
	// acted, "<< c1 ..." where what it expected arrived. This is what golden files hold.
	Transcript string
	Trace      string             // the server's trace alone
	Clients    []*Client          // in order of first appearance
	Stderr     string             // what the server wrote to stderr
	Server     *Server            // the server process (already stopped when Run returns)
	byName     map[string]*Client // clients by name
}

// Saw returns what client name received, or nil.
func (r *Result) Saw(name string) []byte {
	if c := r.byName[name]; c != nil {
		return c.Got
	}
	return nil
}

// Run starts binary with the scenario's flags and args, plays the scenario and stops the server. On a
// failed expectation it returns the transcript so far together with the error, a *Failure.
func Run(binary string, sc *scenario.Scenario, args ...string) (*Result, error) {
	p, err := Open(binary, append(append([]string{}, sc.Args...), args...)...)
	if err != nil {
		return nil, err
	}
	err = p.Play(sc)
	if err == nil {
		err = p.srv.Settle(0, false, SettleWithin)
	}
	if err != nil {
		err = p.Failure(err)
	}
	return p.Close(), err
}

// Session is a scenario being played step by step: tests use it to look at the server (its fds, its CPU
// time) between actions. Run is Open, Play, Close.
type Session struct {
	srv      *Server
	res      *Result
	out      *clip           // the transcript: whole, unless a runaway server made it huge
	saw      strings.Builder // "<<" lines waiting for the server's lines that come before them
	step     string          // the step's name, and
	scenario string          // the scenario's, for the file a failure keeps the transcript in
}

// Open starts the server and waits until it is idle in its first wait.
func Open(binary string, args ...string) (*Session, error) {
	return OpenWith(binary, nil, args...)
}

// OpenWith is Open, and gives started the server's process as soon as it runs, before Open waits for
// it to say where it listens: a grader sets its resource limits there, and can kill a server that
// never gets that far.
func OpenWith(binary string, started func(*os.Process), args ...string) (*Session, error) {
	srv, err := start(binary, true, started, args)
	if err != nil {
		return nil, err
	}
	p := &Session{srv: srv, res: &Result{Server: srv, byName: map[string]*Client{}}, out: newClip(KeepHead, KeepTail),
		step: stepName(binary), scenario: "start"}
	if err := p.srv.Settle(0, true, SettleWithin); err != nil {
		f := p.Failure(fmt.Errorf("before the first action: %v", err))
		p.Close()
		return nil, f
	}
	return p, nil
}

// Server is the server process of the session.
func (p *Session) Server() *Server { return p.srv }

// Client returns the client called name, or nil.
func (p *Session) Client(name string) *Client { return p.res.byName[name] }

// Transcript returns the transcript so far. Past KeepHead+KeepTail bytes, its middle is cut out.
func (p *Session) Transcript() string {
	p.flushTrace()
	return p.out.String()
}

// Do plays scenario lines (one or more, in the scenario format) and waits for the server to settle.
func (p *Session) Do(lines string) error {
	sc, err := scenario.Parse("Do", lines)
	if err != nil {
		return err
	}
	return p.Play(sc)
}

// Close stops the server and closes the clients, and returns the result. The transcript ends where
// the last step left the server: what the server says while it is being torn down is not part of it.
func (p *Session) Close() *Result {
	p.res.Trace = p.srv.takeLines(p.out, true)
	p.res.Transcript = p.out.String()
	p.srv.Kill()
	for _, c := range p.res.Clients {
		c.Close()
	}
	p.res.Stderr = p.srv.Stderr()
	return p.res
}

// flushTrace copies the trace lines that arrived since the last call into the transcript.
func (p *Session) flushTrace() {
	p.srv.takeLines(p.out, false)
}

func (p *Session) lineCount() int { return p.srv.Lines() }

// Play plays the steps of sc in order.
func (p *Session) Play(sc *scenario.Scenario) error {
	p.scenario = strings.TrimSuffix(filepath.Base(sc.Name), filepath.Ext(sc.Name))
	for _, st := range sc.Steps {
		// The server must be idle first, so that no two actions reach it in one wake-up, and so that
		// everything it said so far goes into the transcript before this step's line.
		if err := p.srv.Settle(0, false, SettleWithin); err != nil {
			return fmt.Errorf("%s:%d: before %s: %v", sc.Name, st.Line, st, err)
		}
		p.flushTrace()
		from := p.lineCount()
		err := p.act(st)
		if err == nil {
			err = p.srv.Settle(from, st.ReachesServer() && !st.Unnoticed, SettleWithin)
		}
		p.flushTrace()
		if err == nil { // a failed expectation is reported by the error, not as something received
			io.WriteString(p.out, p.saw.String())
		}
		p.saw.Reset()
		if err != nil {
			return fmt.Errorf("%s:%d: %s: %v", sc.Name, st.Line, st, err)
		}
	}
	return nil
}

func (p *Session) client(st scenario.Step) (*Client, error) {
	c := p.res.byName[st.Client]
	if c == nil {
		return nil, fmt.Errorf("no client %s: connect it first", st.Client)
	}
	if c.fd < 0 {
		return nil, fmt.Errorf("client %s is closed", st.Client)
	}
	return c, nil
}

// act carries out one step and writes its transcript line.
func (p *Session) act(st scenario.Step) error {
	// What a client did goes into the transcript at once; what it received waits in p.saw until the
	// server has settled, so that it follows the server lines that led to it.
	say := func(dir, what string) {
		var w io.Writer = p.out
		if dir == "<<" {
			w = &p.saw
		}
		fmt.Fprintf(w, "%s %s %s\n", dir, st.Client, what)
	}
	switch st.Verb {
	case "connect":
		if p.res.byName[st.Client] != nil {
			return fmt.Errorf("client %s already connected", st.Client)
		}
		say(">>", "connect")
		c, err := Dial(st.Client, p.srv.Addr, st.RcvBuf)
		if err != nil {
			return err
		}
		p.res.byName[st.Client] = c
		p.res.Clients = append(p.res.Clients, c)
		return nil
	case "signal":
		fmt.Fprintf(p.out, ">> signal %s\n", st.Signal)
		sig := unix.SIGTERM
		if st.Signal == "INT" {
			sig = unix.SIGINT
		}
		return p.srv.Signal(sig)
	case "expect-exit":
		code, err := p.srv.Wait(st.Within)
		if err != nil {
			return err
		}
		if code != st.Count {
			return fmt.Errorf("server exited with status %d, want %d; %s", code, st.Count, lastWords(p.srv.Stderr()))
		}
		fmt.Fprintf(&p.saw, "<< server exit %d\n", code)
		return nil
	}
	c, err := p.client(st)
	if err != nil {
		return err
	}
	switch st.Verb {
	case "send":
		if st.Pattern {
			say(">>", fmt.Sprintf("send %d bytes", st.Count))
			return c.SendPattern(st.Count, st.Within)
		}
		say(">>", "send "+strconv.Quote(string(st.Data)))
		return c.Send(st.Data, st.Within)
	case "expect":
		if st.Pattern {
			err = c.ExpectPattern(st.Count, st.Within)
			say("<<", fmt.Sprintf("%d bytes", st.Count))
		} else {
			err = c.Expect(st.Data, st.Within)
			say("<<", strconv.Quote(string(st.Data)))
		}
		return err
	case "expect-line":
		err = c.ExpectLine(st.Data, st.Within)
		say("<<", strconv.Quote(string(st.Data)))
		return err
	case "expect-nothing":
		err = c.ExpectNothing(st.Within)
		say("<<", "nothing for "+st.Within.String())
		return err
	case "expect-eof":
		err = c.ExpectEOF(st.Within)
		say("<<", "EOF")
		return err
	case "shutdown":
		say(">>", "shutdown (SHUT_WR)")
		return c.Shutdown()
	case "reset":
		say(">>", "reset (SO_LINGER 0)")
		return c.Reset()
	case "close":
		say(">>", "close")
		return c.Close()
	case "stop-reading":
		say(">>", "stop reading")
		return c.StopReading()
	}
	return fmt.Errorf("unknown action %q", st.Verb)
}

// Build compiles the step program at pkg (a package path such as ./step02-select-echo, resolved from
// the module that holds dir) and returns the binary's path. Binaries are cached per process.
func Build(dir, pkg string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	key := dir + "\x00" + pkg
	if bin, ok := built[key]; ok {
		return bin, nil
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "muxlab-replay-")
		if err != nil {
			return "", err
		}
		buildDir = d
	}
	// The binary is named after the step's folder, which a failure's kept transcript is named after.
	name := filepath.Base(pkg)
	if abs, err := filepath.Abs(filepath.Join(dir, pkg)); err == nil {
		name = filepath.Base(abs)
	}
	bin := filepath.Join(buildDir, fmt.Sprintf("%s-%d", name, len(built)))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	built[key] = bin
	return bin, nil
}

var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{}
)

// Cleanup removes the binaries Build made.
func Cleanup() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
		buildDir, built = "", map[string]string{}
	}
}
