package live

// Parsing transcript lines (docs/trace-format.md) into the structured events the page draws: the page
// never parses text itself, so that what a line means is decided once, here, and tested against every
// step's golden transcripts.

import (
	"regexp"
	"strconv"
	"strings"
)

// An Event is one transcript line, taken apart. Kind says which fields are set.
type Event struct {
	N    int    `json:"n"`              // the line's index in its transcript, from 0
	Text string `json:"text"`           // the line as written
	Loop string `json:"loop,omitempty"` // step09: the loop that wrote it (L0, L1, ...)
	Kind string `json:"kind"`           // one of Kinds

	Sock    string      `json:"sock,omitempty"`    // the socket (or client) the line is about
	Op      string      `json:"op,omitempty"`      // a client's action; epoll_ctl's ADD/MOD; io_uring's request
	Flags   string      `json:"flags,omitempty"`   // epoll_ctl's interest, IN|RDHUP
	Bytes   int         `json:"bytes,omitempty"`   // bytes read, written, queued, sent or received
	Of      int         `json:"of,omitempty"`      // write: bytes offered
	Pending int         `json:"pending,omitempty"` // queue, unqueue, pause, drop: bytes waiting to be sent
	Limit   int         `json:"limit,omitempty"`   // pause: the high-water mark; too-slow: the limit
	Data    string      `json:"data,omitempty"`    // quoted bytes as in the line ("123\n", cut after 40)
	Result  string      `json:"result,omitempty"`  // EOF, EAGAIN, an errno, ok, a count: how a call ended
	Reason  string      `json:"reason,omitempty"`  // close: why; timeout: which deadline; leave: the notice
	Read    []string    `json:"read,omitempty"`    // select and its ready line: the read set
	Write   []string    `json:"write,omitempty"`   // the write set
	Except  []string    `json:"except,omitempty"`  // the except set
	Ready   []Readiness `json:"ready,omitempty"`   // epoll's ready line: each socket and its events
	Count   int         `json:"count,omitempty"`   // epoll_wait: interest; enter: in-flight; post: messages
	Until   string      `json:"until,omitempty"`   // step07: whose deadline bounds the wait ("c1 idle")
	Peer    string      `json:"peer,omitempty"`    // step09: the other loop (pass, adopt, post, deliver)
	Detail  string      `json:"detail,omitempty"`  // the rest of the line, for kinds with free text
}

// Readiness is one socket in epoll's ready line: c1=IN|RDHUP.
type Readiness struct {
	Sock   string `json:"sock"`
	Events string `json:"events"`
}

// Kinds are the kinds of line Parse knows, each with what it means, for the tests and the page's key.
var Kinds = map[string]string{
	"listen":     "the listening socket is open",
	"block":      "step01: a blocking call waits on one socket",
	"select":     "what the loop asked select to watch",
	"ready":      "what came back: the ready sockets (select's sets, or epoll's events)",
	"accept":     "a client was accepted and named",
	"read":       "a read returned bytes, EOF, EAGAIN or an error",
	"write":      "a write took n of m bytes, or EAGAIN, or failed",
	"close":      "the server closed a socket, and why",
	"queue":      "bytes queued for a client (step03 on)",
	"unqueue":    "bytes left a client's queue",
	"pause":      "the loop stopped reading from a client whose queue passed the high-water mark",
	"resume":     "the loop reads from a client again (queue under the low-water mark)",
	"finish":     "a client that said EOF: send the rest of its queue, then close",
	"drop":       "a queue thrown away",
	"linger":     "all sent: read until the client closes",
	"too-slow":   "a member too slow to read is put out",
	"too-long":   "a line over the limit was refused",
	"join":       "a member joined the room",
	"leave":      "a member left the room",
	"nick":       "a member changed name",
	"signal":     "the server got a signal",
	"epoll_ctl":  "the epoll interest list changed (step05 on)",
	"epoll_wait": "the loop sleeps in epoll_wait",
	"owed":       "step06: a client left undrained, read again next turn",
	"timeout":    "step07: a deadline passed",
	"submit":     "step08: a request put in io_uring's submission queue",
	"enter":      "step08: the loop submits and sleeps until something completes",
	"complete":   "step08: a completion",
	"pass":       "step09: a loop dealt a client to another loop",
	"adopt":      "step09: a loop took a client dealt to it",
	"post":       "step09: messages posted to another loop's inbox",
	"deliver":    "step09: a line from another loop's member",
	"client":     "a client acted (>>): connect, send, shutdown, reset, close, stop or resume reading, a signal",
	"received":   "what a client received (<<)",
	"exit":       "the server exited",
	"unknown":    "a line this parser does not know",
}

var (
	loopPrefix = regexp.MustCompile(`^(L\d+) (.*)$`)
	sets       = regexp.MustCompile(`^read=\[([^\]]*)\] write=\[([^\]]*)\] except=\[([^\]]*)\]$`)
	nBytes     = regexp.MustCompile(`^(\d+) bytes(?: (.*))?$`)
	nOfM       = regexp.MustCompile(`^(\d+) of (\d+) bytes$`)
	queued     = regexp.MustCompile(`^([+-]\d+) bytes, (\d+) pending$`)
	pending    = regexp.MustCompile(`(\d+) (?:bytes )?pending`)
	limitAt    = regexp.MustCompile(`(?:high-water|low-water|limit) (\d+)`)
	closeWhy   = regexp.MustCompile(`^\((.*)\)$`)
	interest   = regexp.MustCompile(`^interest=(\d+)(?: until (.*))?$`)
	inFlight   = regexp.MustCompile(`^in-flight=(\d+)$`)
	posted     = regexp.MustCompile(`^(L\d+) (\d+) message\(s\)$`)
	fromLoop   = regexp.MustCompile(`^(?:(\S+) )?from (L\d+)(?: (.*))?$`)
)

// Parse takes a transcript apart into events, one per line.
func Parse(transcript string) []Event {
	lines := strings.Split(strings.TrimSuffix(transcript, "\n"), "\n")
	if transcript == "" {
		return []Event{}
	}
	events := make([]Event, len(lines))
	for i, l := range lines {
		events[i] = ParseLine(l)
		events[i].N = i
	}
	return events
}

// ParseLine takes one transcript line apart. A line it does not know is of kind "unknown", with the
// line in Detail.
func ParseLine(line string) Event {
	e := Event{Text: line}
	rest := line
	if m := loopPrefix.FindStringSubmatch(rest); m != nil {
		e.Loop, rest = m[1], m[2]
	}
	verb, rest, _ := strings.Cut(rest, " ")
	rest = strings.TrimLeft(rest, " ")
	var ok bool
	switch verb {
	case ">>":
		ok = e.clientAction(rest)
	case "<<":
		ok = e.received(rest)
	case "select", "ready":
		ok = e.readySets(verb, rest)
	case "epoll_wait":
		if m := interest.FindStringSubmatch(rest); m != nil {
			e.Kind, e.Count, e.Until, ok = verb, atoi(m[1]), m[2], true
		}
	case "epoll_ctl":
		e.Kind = verb
		f := strings.Fields(rest)
		if ok = len(f) == 3; ok {
			e.Op, e.Sock, e.Flags = f[0], f[1], f[2]
		}
	case "enter":
		if m := inFlight.FindStringSubmatch(rest); m != nil {
			e.Kind, e.Count, ok = verb, atoi(m[1]), true
		}
	case "submit", "complete":
		ok = e.uring(verb, rest)
	case "post":
		if m := posted.FindStringSubmatch(rest); m != nil {
			e.Kind, e.Peer, e.Count, ok = verb, m[1], atoi(m[2]), true
		}
	case "deliver":
		if m := fromLoop.FindStringSubmatch(rest); m != nil {
			e.Kind, e.Sock, e.Peer, e.Data, ok = verb, m[1], m[2], m[3], true
		}
	case "pass", "adopt":
		e.Kind = verb
		f := strings.Fields(rest)
		if ok = len(f) == 3 && (f[1] == "to" || f[1] == "from"); ok {
			e.Sock, e.Peer = f[0], f[2]
		}
	case "signal":
		e.Kind, e.Detail, ok = verb, rest, rest != ""
	default:
		if _, known := Kinds[verb]; known && verb != "unknown" && verb != "client" && verb != "received" && verb != "exit" {
			ok = e.aboutSocket(verb, rest)
		}
	}
	if !ok {
		return Event{Text: line, Kind: "unknown", Detail: line}
	}
	return e
}

// atoi is strconv.Atoi for digits a pattern has matched already.
func atoi(digits string) int {
	n, _ := strconv.Atoi(digits)
	return n
}

// readySets parses select's sets (asked, or came back) and epoll's ready line.
func (e *Event) readySets(verb, rest string) bool {
	e.Kind = verb
	if m := sets.FindStringSubmatch(rest); m != nil {
		e.Read, e.Write, e.Except = strings.Fields(m[1]), strings.Fields(m[2]), strings.Fields(m[3])
		return true
	}
	if verb != "ready" {
		return false
	}
	e.Ready = []Readiness{}
	if rest == "(none)" {
		return true
	}
	for _, f := range strings.Fields(rest) {
		sock, events, found := strings.Cut(f, "=")
		if !found {
			return false
		}
		e.Ready = append(e.Ready, Readiness{Sock: sock, Events: events})
	}
	return len(e.Ready) > 0
}

// uring parses step08's "submit OP SOCK [N bytes|Ns]" and "complete OP SOCK RESULT [(more)]".
func (e *Event) uring(verb, rest string) bool {
	e.Kind = verb
	f := strings.Fields(rest)
	if len(f) < 2 {
		return false
	}
	e.Op, e.Sock = f[0], f[1]
	if e.Op == "cancel" && len(f) == 3 { // submit cancel recv c2
		e.Op, e.Sock = "cancel "+f[1], f[2]
		return verb == "submit"
	}
	if e.Op == "timeout" && verb == "submit" { // submit timeout 5s: no socket
		e.Sock, e.Detail = "", f[1]
		return len(f) == 2
	}
	if verb == "submit" {
		if len(f) == 4 && f[3] == "bytes" { // submit send c1 69 bytes
			e.Bytes, _ = strconv.Atoi(f[2])
			return true
		}
		return len(f) == 2
	}
	if e.Op == "timeout" { // complete timeout ETIME
		e.Sock, e.Result = "", f[1]
		return len(f) == 2
	}
	if len(f) < 3 {
		return false
	}
	e.Result = f[2]
	if n, err := strconv.Atoi(f[2]); err == nil && (e.Op == "recv" || e.Op == "send") {
		e.Bytes = n
	}
	e.Detail = strings.Join(f[3:], " ") // (more)
	return len(f) == 3 || len(f) == 4 && f[3] == "(more)"
}

// aboutSocket parses the lines shaped "verb sock detail".
func (e *Event) aboutSocket(verb, rest string) bool {
	e.Kind = verb
	sock, detail, _ := strings.Cut(rest, " ")
	if sock == "" {
		return false
	}
	e.Sock, e.Detail = sock, detail
	switch {
	case detail == "EAGAIN" || detail == "EOF":
		e.Result = detail
		return verb == "read" || verb == "write" || verb == "accept"
	case strings.HasPrefix(detail, "error "):
		e.Result = strings.TrimPrefix(detail, "error ")
		return verb == "read" || verb == "write" || verb == "accept"
	}
	switch verb {
	case "listen", "accept":
		return detail == ""
	case "block": // block accept listener, block read c1
		e.Op, e.Sock, e.Detail = sock, detail, ""
		return detail != "" && !strings.Contains(detail, " ")
	case "read":
		m := nBytes.FindStringSubmatch(detail)
		if m == nil {
			return false
		}
		e.Bytes, _ = strconv.Atoi(m[1])
		e.Data = m[2]
		return true
	case "write":
		m := nOfM.FindStringSubmatch(detail)
		if m == nil {
			return false
		}
		e.Bytes, _ = strconv.Atoi(m[1])
		e.Of, _ = strconv.Atoi(m[2])
		return true
	case "queue", "unqueue":
		m := queued.FindStringSubmatch(detail)
		if m == nil {
			return false
		}
		n, _ := strconv.Atoi(m[1])
		e.Bytes = max(n, -n)
		e.Pending, _ = strconv.Atoi(m[2])
		return true
	case "close":
		m := closeWhy.FindStringSubmatch(detail)
		if m == nil {
			return false
		}
		e.Reason = m[1]
		return true
	case "timeout", "leave":
		e.Reason = detail
		return detail != ""
	case "pause", "resume", "drop", "too-slow", "finish":
		if m := pending.FindStringSubmatch(detail); m != nil {
			e.Pending, _ = strconv.Atoi(m[1])
		}
		if m := limitAt.FindStringSubmatch(detail); m != nil {
			e.Limit, _ = strconv.Atoi(m[1])
		}
		if verb == "finish" {
			e.Pending, _ = strconv.Atoi(strings.Fields(detail + " 0")[0])
		}
		return true
	}
	return detail != "" // join, nick, linger, too-long, owed: free text about the socket
}

// clientAction parses the replayer's ">> c1 send ..." lines (and the live view's, which are the same).
func (e *Event) clientAction(rest string) bool {
	e.Kind = "client"
	if sig, ok := strings.CutPrefix(rest, "signal "); ok {
		e.Op, e.Detail = "signal", sig
		return true
	}
	sock, what, _ := strings.Cut(rest, " ")
	e.Sock = sock
	verb, arg, _ := strings.Cut(what, " ")
	e.Op = verb
	switch verb {
	case "connect", "close":
		return arg == ""
	case "shutdown", "reset":
		e.Detail = arg // (SHUT_WR), (SO_LINGER 0)
		return true
	case "stop", "resume":
		e.Op = verb + " reading"
		return arg == "reading"
	case "send":
		if m := nBytes.FindStringSubmatch(arg); m != nil && m[2] == "" {
			e.Bytes, _ = strconv.Atoi(m[1])
			return true
		}
		s, err := strconv.Unquote(arg)
		e.Data, e.Bytes = arg, len(s)
		return err == nil
	}
	return false
}

// received parses "<< c1 ..." lines: what a client got ("123\n", N bytes, EOF, nothing for 300ms), and
// "<< server exit 0".
func (e *Event) received(rest string) bool {
	e.Kind = "received"
	sock, what, _ := strings.Cut(rest, " ")
	e.Sock = sock
	if sock == "server" {
		code, ok := strings.CutPrefix(what, "exit ")
		e.Kind, e.Sock, e.Result = "exit", "", code
		return ok
	}
	switch {
	case what == "EOF":
		e.Result = "EOF"
		return true
	case strings.HasPrefix(what, "nothing for "):
		e.Result, e.Detail = "nothing", strings.TrimPrefix(what, "nothing for ")
		return true
	case strings.HasPrefix(what, "error "): // the live view: a read that failed (ECONNRESET)
		e.Result = strings.TrimPrefix(what, "error ")
		return true
	}
	if m := nBytes.FindStringSubmatch(what); m != nil { // << c1 30000 bytes, or the live view's
		e.Bytes, _ = strconv.Atoi(m[1]) // << c1 4 bytes "123\n"
		e.Data = m[2]
		return true
	}
	s, err := strconv.Unquote(what)
	e.Data, e.Bytes = what, len(s)
	return err == nil
}
