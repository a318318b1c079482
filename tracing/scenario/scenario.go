// Package scenario parses the lab's scenario files: plain-text scripts of real TCP clients talking to a
// step's server. The format is specified in docs/trace-format.md; in short, one action per line:
//
//	# the seed's operation steps
//	args -sndbuf 16384            server flags, before any action
//	connect c1                    open a client (names: c1, c2, ... in the order the server accepts them)
//	send c1 "123\n"               Go-quoted bytes, or: send c1 100000 bytes (a known pattern)
//	expect c1 "123\n"             exactly these bytes arrive next (or: expect c1 100000 bytes)
//	expect-line c1 "123"          the next line is this text
//	expect-nothing c1 200ms       no byte arrives for that long
//	expect-eof c1                 the server closed the connection
//	shutdown c1                   half-close: SHUT_WR, a FIN; the client can still read
//	reset c1                      SO_LINGER 0 then close: an RST, pending data thrown away
//	close c1                      a normal close
//	stop-reading c1               shrink the client's receive buffer; it reads only when told to expect
//	signal TERM                   send the server a signal
//	expect-exit 0                 the server exits by itself with this status
//
// Actions that reach the server (connect, send, shutdown, reset, close, signal) make the replayer wait
// until the server has reacted (a new trace line) and is blocked again with nothing more to say. Add
// "unnoticed" to one the server cannot see yet (it is blocked elsewhere, the client is still in the
// backlog): the replayer then waits only for the server to stay blocked.
package scenario

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Step is one parsed line.
type Step struct {
	Line      int           // line number in the file, for messages
	Verb      string        // connect, send, expect, ...
	Client    string        // c1, ... ("" for signal and expect-exit)
	Data      []byte        // literal bytes for send/expect/expect-line
	Count     int           // pattern length for send/expect "N bytes"; status for expect-exit
	Pattern   bool          // Data is a pattern of Count bytes rather than a literal
	Within    time.Duration // bound for expects
	RcvBuf    int           // connect rcvbuf=N
	Signal    string        // signal name
	Unnoticed bool          // the server does not wake for this action
}

// Scenario is a parsed file.
type Scenario struct {
	Name  string   // file name, for messages
	Args  []string // extra server flags
	Steps []Step
}

// Default bounds: long enough for a loaded CI machine, short enough that a hang fails quickly.
const (
	DefaultWithin  = 10 * time.Second
	DefaultNothing = 200 * time.Millisecond
)

// ReachesServer reports whether the action is one the server can see (as opposed to a client looking at
// its own socket), so the replayer waits for the server before and after it.
func (s Step) ReachesServer() bool { return reachesServer[s.Verb] }

// reachesServer lists the actions the server can see; the others only look at a client's socket.
var reachesServer = map[string]bool{"connect": true, "send": true, "shutdown": true, "reset": true,
	"close": true, "signal": true}

// String renders the step as it appears in a transcript.
func (s Step) String() string {
	var b strings.Builder
	b.WriteString(s.Verb)
	if s.Client != "" {
		b.WriteString(" " + s.Client)
	}
	switch {
	case s.Verb == "signal":
		b.WriteString(" " + s.Signal)
	case s.Verb == "expect-exit":
		fmt.Fprintf(&b, " %d", s.Count)
	case s.Pattern:
		fmt.Fprintf(&b, " %d bytes", s.Count)
	case s.Data != nil && s.Verb == "expect-line":
		b.WriteString(" " + strconv.Quote(strings.TrimSuffix(string(s.Data), "\n")))
	case s.Data != nil:
		b.WriteString(" " + strconv.Quote(string(s.Data)))
	}
	if s.RcvBuf > 0 {
		fmt.Fprintf(&b, " rcvbuf=%d", s.RcvBuf)
	}
	if s.Verb == "expect-nothing" {
		b.WriteString(" " + s.Within.String())
	}
	if s.Unnoticed {
		b.WriteString(" unnoticed")
	}
	return b.String()
}

// ParseFile reads and parses a scenario file.
func ParseFile(path string) (*Scenario, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, string(text))
}

// Parse parses scenario text; name is used in error messages ("name:line: problem").
func Parse(name, text string) (*Scenario, error) {
	sc := &Scenario{Name: name}
	for i, raw := range strings.Split(text, "\n") {
		lineNo := i + 1
		fields, err := split(raw)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
		}
		if len(fields) == 0 {
			continue
		}
		if fields[0] == "args" {
			if len(sc.Steps) > 0 {
				return nil, fmt.Errorf("%s:%d: args must come before the first action", name, lineNo)
			}
			sc.Args = append(sc.Args, fields[1:]...)
			continue
		}
		st, err := parseStep(fields)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
		}
		st.Line = lineNo
		sc.Steps = append(sc.Steps, st)
	}
	if len(sc.Steps) == 0 {
		return nil, fmt.Errorf("%s: no actions", name)
	}
	return sc, nil
}

func parseStep(f []string) (Step, error) {
	st := Step{Verb: f[0], Within: DefaultWithin}
	if n := len(f); n > 1 && f[n-1] == "unnoticed" {
		st.Unnoticed = true
		if !reachesServer[st.Verb] {
			return st, fmt.Errorf("%s never reaches the server: \"unnoticed\" does not apply", st.Verb)
		}
		f = f[:n-1]
	}
	args := f[1:]
	need := func(min, max int, usage string) error {
		if len(args) < min || len(args) > max {
			return fmt.Errorf("usage: %s", usage)
		}
		return nil
	}
	switch st.Verb {
	case "signal":
		if err := need(1, 1, "signal INT|TERM"); err != nil {
			return st, err
		}
		if args[0] != "INT" && args[0] != "TERM" {
			return st, fmt.Errorf("signal %q: want INT or TERM", args[0])
		}
		st.Signal = args[0]
		return st, nil
	case "expect-exit":
		if err := need(1, 1, "expect-exit STATUS"); err != nil {
			return st, err
		}
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 0 || n > 255 {
			return st, fmt.Errorf("exit status %q: want 0..255", args[0])
		}
		st.Count = n
		return st, nil
	}
	if len(args) == 0 {
		return st, fmt.Errorf("%s needs a client name", st.Verb)
	}
	st.Client, args = args[0], args[1:]
	if !validName(st.Client) {
		return st, fmt.Errorf("client name %q: want letters and digits, starting with a letter", st.Client)
	}
	switch st.Verb {
	case "connect":
		for _, a := range args {
			v, ok := strings.CutPrefix(a, "rcvbuf=")
			n, err := strconv.Atoi(v)
			if !ok || err != nil || n <= 0 {
				return st, fmt.Errorf("connect option %q: want rcvbuf=BYTES", a)
			}
			st.RcvBuf = n
		}
	case "send", "expect":
		return st, parsePayload(&st, args)
	case "expect-line":
		if len(args) != 1 {
			return st, fmt.Errorf("usage: expect-line CLIENT \"text\"")
		}
		s, err := strconv.Unquote(args[0])
		if err != nil {
			return st, fmt.Errorf("expect-line text %s: not a Go string literal", args[0])
		}
		if strings.Contains(s, "\n") {
			return st, fmt.Errorf("expect-line text holds a newline: use expect")
		}
		st.Data = []byte(s + "\n")
	case "expect-nothing":
		st.Within = DefaultNothing
		if len(args) == 1 {
			d, err := time.ParseDuration(args[0])
			if err != nil || d <= 0 || d > time.Minute {
				return st, fmt.Errorf("duration %q: want e.g. 200ms, at most 1m", args[0])
			}
			st.Within = d
		} else if len(args) > 1 {
			return st, fmt.Errorf("usage: expect-nothing CLIENT [DURATION]")
		}
	case "expect-eof", "shutdown", "reset", "close", "stop-reading":
		if len(args) != 0 {
			return st, fmt.Errorf("usage: %s CLIENT", st.Verb)
		}
	default:
		return st, fmt.Errorf("unknown action %q (want one of: %s)", st.Verb, verbList())
	}
	return st, nil
}

func verbList() string {
	return "connect send expect expect-line expect-nothing expect-eof shutdown reset close stop-reading signal expect-exit"
}

// MaxPattern bounds "N bytes" so that a typo cannot ask for gigabytes.
const MaxPattern = 64 << 20

func parsePayload(st *Step, args []string) error {
	switch {
	case len(args) == 1:
		s, err := strconv.Unquote(args[0])
		if err != nil {
			return fmt.Errorf("%s data %s: not a Go string literal (\"...\")", st.Verb, args[0])
		}
		if s == "" {
			return fmt.Errorf("%s data is empty", st.Verb)
		}
		st.Data = []byte(s)
	case len(args) == 2 && args[1] == "bytes":
		n, err := strconv.Atoi(args[0])
		if err != nil || n <= 0 || n > MaxPattern {
			return fmt.Errorf("%s %q bytes: want a count from 1 to %d", st.Verb, args[0], MaxPattern)
		}
		st.Count, st.Pattern = n, true
	default:
		return fmt.Errorf("usage: %s CLIENT \"text\" | %s CLIENT N bytes", st.Verb, st.Verb)
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i, c := range s {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// split cuts a line into fields: words, and Go string literals kept whole with their quotes. A # outside
// a string starts a comment.
func split(line string) ([]string, error) {
	var fields []string
	for i := 0; i < len(line); {
		switch c := line[i]; {
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#':
			return fields, nil
		case c == '"':
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' {
					j++
				}
			}
			if j >= len(line) {
				return nil, fmt.Errorf("unterminated string")
			}
			fields = append(fields, line[i:j+1])
			i = j + 1
		default:
			j := i
			for j < len(line) && line[j] != ' ' && line[j] != '\t' && line[j] != '\r' && line[j] != '#' {
				j++
			}
			fields = append(fields, line[i:j])
			i = j
		}
	}
	return fields, nil
}

// Pattern returns the n bytes at offset off of the lab's test pattern: 64-byte lines of printable text,
// so that a pattern can pass through a line-based server and a cut anywhere is easy to spot.
func Pattern(off, n int) []byte {
	const line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n"
	p := make([]byte, n)
	for i := range p {
		p[i] = line[(off+i)%len(line)]
	}
	return p
}
