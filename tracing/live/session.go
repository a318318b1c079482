//go:build unix

package live

// A live session: a step's server started as a child (by tracing/replay, in a process group of its
// own), clients on real sockets that the page's buttons drive, and the transcript of both streamed to
// the page as server-sent events while it happens.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
	"muxlab/tracing/scenario"
)

// reactWithin bounds how long an action waits for the server to react and fall asleep again. A server
// that does not react within it is blocked elsewhere (step01 in read, step02 in a write), which the
// page says.
const reactWithin = 2 * time.Second

// unwatched is how long a session may go without a page watching its events before it ends: a page
// that asked for a session and went away must not leave a server behind.
const unwatched = 30 * time.Second

// SessionInfo is what the page is told of a session it started.
type SessionInfo struct {
	ID   string   `json:"id"`
	Step string   `json:"step"`
	Args []string `json:"args"`
	Addr string   `json:"addr"` // where the server listens (loopback, a free port)
	Pid  int      `json:"pid"`
}

// Session is one live server and its clients.
type Session struct {
	SessionInfo

	srv     *replay.Server
	actions sync.Mutex // one action at a time, each waiting for the server to settle
	onEnd   func()     // removes the session from the Server

	mu      sync.Mutex
	events  []Event
	partial string        // lines come whole from the server; this is only a guard
	status  Status        // the last thing the session says about itself
	changed chan struct{} // closed and replaced when events or status change
	clients map[string]*client
	named   int           // clients connected so far: the next is c<named+1>
	ended   bool          // Close has run
	watched bool          // a page has opened the event stream
	done    chan struct{} // closed by Close: the clients' and watchExit's goroutines end
}

// Status is what a session says about the server: idle (asleep, waiting for the outside world),
// unnoticed (an action it did not react to), busy, exited, ended (the session is over), or client (a
// client's own trouble: a send that failed, or too much unsent).
type Status struct {
	State   string `json:"state"`
	Message string `json:"message"`
	Seq     int    `json:"seq"` // counts statuses, so that the page and tests can wait for the next
}

func (s *Server) handleStart(w http.ResponseWriter, r *http.Request) {
	st, err := s.step(r.FormValue("step"))
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	args := strings.Fields(r.FormValue("args"))
	for _, a := range args {
		if name := strings.TrimLeft(a, "-"); name == "addr" || strings.HasPrefix(name, "addr=") || name == "demo" {
			writeJSON(w, nil, badRequest("-%s is the live view's to choose", name))
			return
		}
	}
	se, err := s.startSession(st, args)
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	writeJSON(w, se.SessionInfo, nil)
}

// startSession builds the step and starts its server.
func (s *Server) startSession(st Step, args []string) (*Session, error) {
	bin, err := replay.Build(s.root, "./"+st.Dir)
	if err != nil {
		return nil, fmt.Errorf("%s does not build: %v", st.Name, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errors.New("the live view is shutting down")
	}
	s.nextID++
	id := strconv.Itoa(s.nextID)
	s.mu.Unlock()
	se := &Session{SessionInfo: SessionInfo{ID: id, Step: st.Name, Args: args}, changed: make(chan struct{}), clients: map[string]*client{},
		done: make(chan struct{}), status: Status{State: "starting"}}
	srv, err := replay.Watch(bin, se.addLines, args...)
	if err != nil {
		return nil, fmt.Errorf("%s did not start: %v", st.Name, err)
	}
	se.srv, se.Addr, se.Pid = srv, srv.Addr, srv.Pid()
	se.onEnd = func() {
		s.mu.Lock()
		delete(s.sessions, id)
		s.mu.Unlock()
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.sessions[id] = se
	}
	s.mu.Unlock()
	if closed {
		se.Close()
		return nil, errors.New("the live view is shutting down")
	}
	go se.watchExit()
	time.AfterFunc(unwatched, func() {
		se.mu.Lock()
		orphan := !se.watched
		se.mu.Unlock()
		if orphan {
			se.Close()
		}
	})
	if err := srv.Settle(0, true, replay.SettleWithin); err != nil {
		se.setStatus("busy", fmt.Sprintf("%s has not settled in its first wait: %v", st.Name, err))
	} else {
		se.setStatus("idle", fmt.Sprintf("%s listens on %s (pid %d) and waits", st.Name, se.Addr, se.Pid))
	}
	return se, nil
}

// session returns the live session of the request's {id}.
func (s *Server) session(r *http.Request) (*Session, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	se := s.sessions[r.PathValue("id")]
	if se == nil {
		return nil, notFound("no live session %s: it ended (its server exited or its page went away); start a new one", r.PathValue("id"))
	}
	return se, nil
}

func (s *Server) handleClose(w http.ResponseWriter, r *http.Request) {
	se, err := s.session(r)
	if err == nil {
		se.Close()
	}
	writeJSON(w, map[string]bool{"closed": err == nil}, err)
}

// handleEvents streams the session as server-sent events: every transcript line so far and then as
// it comes ("event: line", an Event), and the session's status when it changes ("event: status"). The
// session ends when the page goes away.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	se, err := s.session(r)
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeJSON(w, nil, errors.New("this connection cannot stream"))
		return
	}
	defer se.Close() // the tab closed, or the page left the session: nothing of it may stay
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	sent, seq := 0, -1
	for {
		se.mu.Lock()
		se.watched = true
		events, status, changed, ended := se.events[sent:], se.status, se.changed, se.ended
		se.mu.Unlock()
		for _, e := range events {
			writeEvent(w, "line", e)
		}
		sent += len(events)
		if status.Seq != seq {
			writeEvent(w, "status", status)
			seq = status.Seq
		}
		flusher.Flush()
		if ended {
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

func writeEvent(w io.Writer, name string, v any) {
	data, _ := json.Marshal(v)
	fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
}

// addLines files complete lines of the transcript (from the server's trace, or a client's) as events.
func (se *Session) addLines(text string) {
	se.mu.Lock()
	defer se.mu.Unlock()
	text = se.partial + text
	end := strings.LastIndexByte(text, '\n') + 1
	se.partial = text[end:]
	for _, line := range strings.Split(strings.TrimSuffix(text[:end], "\n"), "\n") {
		if line == "" && end == 0 {
			continue
		}
		e := ParseLine(line)
		e.N = len(se.events)
		se.events = append(se.events, e)
	}
	se.changedLocked()
}

func (se *Session) changedLocked() {
	close(se.changed)
	se.changed = make(chan struct{})
}

func (se *Session) setStatus(state, message string) {
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.ended {
		return
	}
	se.status = Status{State: state, Message: message, Seq: se.status.Seq + 1}
	se.changedLocked()
}

// Events returns the session's events so far, and its status.
func (se *Session) Events() ([]Event, Status) {
	se.mu.Lock()
	defer se.mu.Unlock()
	return append([]Event{}, se.events...), se.status
}

// watchExit tells the page when the server exits by itself (after SIGTERM, or a crash).
func (se *Session) watchExit() {
	select {
	case <-se.srv.Done():
	case <-se.done:
		return
	}
	status := se.srv.ExitStatus()
	se.addLines("<< server exit " + strings.TrimPrefix(status, "exit status ") + "\n")
	msg := fmt.Sprintf("the server exited (%s)", status)
	if stderr := strings.TrimSpace(se.srv.Stderr()); stderr != "" {
		lines := strings.Split(stderr, "\n")
		msg += "; its stderr ended with: " + strings.Join(lines[max(0, len(lines)-3):], " / ")
	}
	se.setStatus("exited", msg)
}

// Close ends the session: the server's process group is killed, the clients' sockets closed.
func (se *Session) Close() {
	se.mu.Lock()
	if se.ended {
		se.mu.Unlock()
		return
	}
	se.ended = true
	se.status = Status{State: "ended", Message: "the session is over: its server and clients are gone", Seq: se.status.Seq + 1}
	clients := se.clients
	close(se.done)
	se.changedLocked()
	se.mu.Unlock()
	for _, c := range clients {
		c.close()
	}
	se.srv.Kill()
	if se.onEnd != nil {
		se.onEnd()
	}
}

// An Action is what a button asks of the session.
type Action struct {
	Verb   string `json:"verb"`   // connect, send, send-bytes, stop-reading, resume-reading, shutdown, reset, close, signal
	Client string `json:"client"` // c1, ... (connect names the next client itself)
	Text   string `json:"text"`   // send: a line, sent with a newline at its end
	Bytes  int    `json:"bytes"`  // send-bytes: how many bytes of the lab's pattern
}

func (s *Server) handleAct(w http.ResponseWriter, r *http.Request) {
	se, err := s.session(r)
	if err != nil {
		writeJSON(w, nil, err)
		return
	}
	var a Action
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&a); err != nil {
		writeJSON(w, nil, badRequest("the action is not JSON: %v", err))
		return
	}
	status, err := se.Act(a)
	writeJSON(w, status, err)
}

// Act carries out one action and waits (up to reactWithin) for the server to react and settle; it
// returns the session's status after it.
func (se *Session) Act(a Action) (Status, error) {
	se.actions.Lock()
	defer se.actions.Unlock()
	if se.srv.Exited() {
		return Status{}, badRequest("the server has exited (%s): start a new session", se.srv.ExitStatus())
	}
	from := se.srv.Lines()
	wakes, err := se.do(a)
	if err != nil {
		return Status{}, err
	}
	err = se.srv.Settle(from, wakes, reactWithin)
	switch {
	case se.srv.Exited():
		// watchExit says so.
	case err != nil && wakes && se.srv.Lines() == from:
		se.setStatus("unnoticed", fmt.Sprintf("the server did not react to %s within %v: %s", a.Verb, reactWithin, se.where()))
	case err != nil:
		se.setStatus("busy", fmt.Sprintf("the server is still busy after %v", reactWithin))
	default:
		se.setStatus("idle", se.where())
	}
	_, status := se.Events()
	return status, nil
}

// where says where the settled server sleeps: in its wait, or in a call in the middle of a turn (a
// blocking write, step02's stall; step01's blocking read), as its last trace line shows.
func (se *Session) where() string {
	if se.Step == "step10" {
		return "the server is asleep: its goroutines wait in the Go runtime's netpoller, which writes no trace"
	}
	se.mu.Lock()
	defer se.mu.Unlock()
	for i := len(se.events) - 1; i >= 0; i-- {
		switch e := se.events[i]; e.Kind {
		case "client", "received", "exit":
			continue
		case "select", "epoll_wait", "enter":
			return "the server is asleep in its wait (" + e.Kind + "), for the outside world"
		case "block":
			return "the server is asleep in a blocking " + e.Op + " on " + e.Sock
		default:
			line, _, _ := strings.Cut(strings.Join(strings.Fields(e.Text), " "), ` "`) // without the quoted bytes
			return "the server is asleep in the middle of a turn, after its line «" + line + "»: blocked in a system call"
		}
	}
	return "the server is asleep"
}

// do carries out the action and writes its line into the transcript; it reports whether the server
// can see the action (and so should react to it).
func (se *Session) do(a Action) (bool, error) {
	if a.Verb == "connect" {
		return true, se.connect()
	}
	if a.Verb == "signal" {
		se.addLines(">> signal TERM\n")
		return true, se.srv.Signal(unix.SIGTERM)
	}
	se.mu.Lock()
	c := se.clients[a.Client]
	se.mu.Unlock()
	if c == nil {
		return false, badRequest("no client %q: connect one first", a.Client)
	}
	if c.isClosed() {
		return false, badRequest("%s is closed", a.Client)
	}
	switch a.Verb {
	case "send":
		if strings.ContainsAny(a.Text, "\r\n") {
			return false, badRequest("send sends one line: the newline is added")
		}
		p := []byte(a.Text + "\n")
		se.addLines(fmt.Sprintf(">> %s send %s\n", c.name, strconv.Quote(string(p))))
		c.send(p)
	case "send-bytes":
		if a.Bytes <= 0 || a.Bytes > scenario.MaxPattern {
			return false, badRequest("send from 1 to %d bytes", scenario.MaxPattern)
		}
		se.addLines(fmt.Sprintf(">> %s send %d bytes\n", c.name, a.Bytes))
		c.send(scenario.Pattern(c.patternSent, a.Bytes))
		c.patternSent += a.Bytes
	case "stop-reading":
		se.addLines(fmt.Sprintf(">> %s stop reading\n", c.name))
		return false, c.setReading(false)
	case "resume-reading":
		se.addLines(fmt.Sprintf(">> %s resume reading\n", c.name))
		return false, c.setReading(true)
	case "shutdown":
		se.addLines(fmt.Sprintf(">> %s shutdown (SHUT_WR)\n", c.name))
		c.shutdown()
	case "reset":
		se.addLines(fmt.Sprintf(">> %s reset (SO_LINGER 0)\n", c.name))
		c.conn.SetLinger(0)
		c.close()
	case "close":
		se.addLines(fmt.Sprintf(">> %s close\n", c.name))
		c.close()
	default:
		return false, badRequest("unknown action %q", a.Verb)
	}
	return true, nil
}

// connect opens the next client, c1, c2, ...: the names the server gives them in the order it accepts.
func (se *Session) connect() error {
	se.mu.Lock()
	se.named++
	name := fmt.Sprintf("c%d", se.named)
	se.mu.Unlock()
	se.addLines(">> " + name + " connect\n")
	// The server's address, on loopback (replay.Watch chose it). A fixed receive buffer, set before
	// connecting, as a scenario's rcvbuf= does: a client that stops reading then stalls the server
	// after about 32 KiB, whatever the kernel's autotuning would have grown it to; and one that
	// reads again gets it all at once (shrinking the buffer of a connected socket instead, as
	// stop-reading does in a scenario, leaves a window that grows back slowly, for seconds).
	dialer := net.Dialer{Control: func(_, _ string, raw syscall.RawConn) error {
		var err error
		raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, clientRcvBuf) })
		return err
	}}
	conn, err := dialer.Dial("tcp", se.Addr)
	if err != nil {
		return fmt.Errorf("%s: %v", name, err)
	}
	c := newClient(name, conn.(*net.TCPConn), se)
	se.mu.Lock()
	se.clients[name] = c
	ended := se.ended
	se.mu.Unlock()
	if ended {
		conn.Close()
	}
	return nil
}

// clientRcvBuf is the receive buffer of a live client (the kernel doubles it).
const clientRcvBuf = 16 << 10

// client is one live client: it reads whatever arrives (until told to stop) and writes what the page
// sends, each in a goroutine of its own, so that a server that does not read stalls only the writer.
type client struct {
	name        string
	conn        *net.TCPConn
	se          *Session
	out         chan []byte   // what the writer is to send, in order
	wake        chan struct{} // tells a reader that stopped that it may read again
	patternSent int           // bytes of the pattern sent so far (only Act touches it)

	mu      sync.Mutex
	reading bool
	closed  bool
	done    chan struct{}
}

func newClient(name string, conn *net.TCPConn, se *Session) *client {
	c := &client{name: name, conn: conn, se: se, out: make(chan []byte, 1024), wake: make(chan struct{}, 1),
		reading: true, done: make(chan struct{})}
	go c.readLoop()
	go c.writeLoop()
	return c
}

func (c *client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *client) readLoop() {
	buf := make([]byte, 64<<10)
	for {
		c.mu.Lock()
		reading, closed := c.reading, c.closed
		c.mu.Unlock()
		if closed {
			return
		}
		if !reading {
			select {
			case <-c.wake:
				continue
			case <-c.done:
				return
			}
		}
		n, err := c.conn.Read(buf)
		if n > 0 {
			// The server's trace lines that led to these bytes come first where they are in the
			// pipe already. (The one for the write itself may be printed after the client has
			// the bytes: the server prints it when its write returns.)
			c.se.srv.Lines()
			c.se.addLines(fmt.Sprintf("<< %s %d bytes %s\n", c.name, n, tracing.Quote(buf[:n])))
		}
		switch {
		case err == nil, errors.Is(err, os.ErrDeadlineExceeded): // stop-reading set a deadline to stop this Read
		case c.isClosed():
			return
		case err == io.EOF:
			c.se.addLines(fmt.Sprintf("<< %s EOF\n", c.name))
			return
		default:
			c.se.addLines(fmt.Sprintf("<< %s error %s\n", c.name, errnoName(err)))
			return
		}
	}
}

// errnoName names a client's error as the trace does (ECONNRESET).
var errnoName = tracing.ErrName

func (c *client) writeLoop() {
	for {
		select {
		case p := <-c.out:
			if _, err := c.conn.Write(p); err != nil && !c.isClosed() {
				c.se.setStatus("client", fmt.Sprintf("%s could not send: %s", c.name, errnoName(err)))
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *client) send(p []byte) {
	select {
	case c.out <- p:
	default:
		c.se.setStatus("client", fmt.Sprintf("%s has too much unsent already: this send is dropped", c.name))
	}
}

// setReading stops or resumes reading: what the server sends then fills the client's receive buffer,
// and piles up on the server's side.
func (c *client) setReading(on bool) error {
	c.mu.Lock()
	c.reading = on
	c.mu.Unlock()
	if !on {
		return c.conn.SetReadDeadline(time.Now()) // ends the Read under way
	}
	c.conn.SetReadDeadline(time.Time{})
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return nil
}

func (c *client) shutdown() { c.conn.CloseWrite() }

func (c *client) close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.done)
	}
	c.mu.Unlock()
	c.conn.Close()
}
