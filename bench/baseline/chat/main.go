// Command chat is the bench's baseline chat room: step04's room as a Go programmer would write it
// without an event loop. Each member has two goroutines: one reads its lines and acts on them, the
// other writes out what the room has queued for it. The room is a list under a mutex.
//
// The wire protocol is step04's, so the same clients and the same load run against both: a member
// sends lines; the others receive "name: text"; notices start with "* ". A member gets a default name
// (guestN) and may change it with /nick; /who, /msg NAME TEXT and /quit work as in step04. A member
// with -maxqueue bytes waiting is too slow for the room and is put out, so nobody waits for it.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"
)

const help = "commands: /nick NAME, /who, /msg NAME TEXT, /quit"

// A member is one client in the room.
type member struct {
	conn net.Conn
	name string // guarded by room.mu

	mu    sync.Mutex
	out   []byte        // queued for this member, not yet handed to the writer
	wake  chan struct{} // has room for one token: "out has something"
	gone  bool          // left: the writer sends what is queued, then closes
	ended chan struct{} // closed when the writer has closed the connection
}

// The room is everyone connected, in order of arrival.
type room struct {
	mu       sync.Mutex
	members  []*member
	guests   int
	maxLine  int
	maxQueue int
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	maxLine := flag.Int("maxline", 1024, "longest line a member may send, in bytes; longer ones are refused")
	maxQueue := flag.Int("maxqueue", 64<<10, "a member with this many bytes waiting to be sent to it is too slow, and is put out")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "baseline-chat: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "baseline-chat: listening on %s\n", ln.Addr())
	(&room{maxLine: *maxLine, maxQueue: *maxQueue}).run(ln)
}

// run accepts members until the listener fails for good.
func (r *room) run(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of fds, for example: say so, pause as net/http does so as not to spin, and keep
			// serving the members already here.
			fmt.Fprintf(os.Stderr, "baseline-chat: accept: %v\n", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go r.serve(c)
	}
}

// serve runs one member from join to leave.
func (r *room) serve(c net.Conn) {
	m := &member{conn: c, wake: make(chan struct{}, 1), ended: make(chan struct{})}
	go m.write()
	r.join(m)
	in := bufio.NewReaderSize(c, r.maxLine+2) // room for the longest line and its "\r\n"
	for {
		line, err := readLine(in, r.maxLine)
		if errors.Is(err, errTooLong) {
			r.tell(m, fmt.Sprintf("* line too long (over %d bytes): not sent", r.maxLine))
			continue
		}
		if line != "" || err == nil {
			if !r.handle(m, line) {
				return // /quit
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				r.leave(m, "left")
			} else {
				r.leave(m, "left (connection reset)")
			}
			return
		}
	}
}

var errTooLong = errors.New("line too long")

// readLine returns the next line without its "\n" or "\r\n". A line longer than max is skipped up to
// its newline and reported as errTooLong. At the end of the stream, an unfinished last line is still
// returned, with the error.
func readLine(in *bufio.Reader, max int) (string, error) {
	b, err := in.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = in.ReadSlice('\n')
		}
		if err == nil {
			err = errTooLong
		}
		return "", err
	}
	line := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if len(line) > max {
		return "", errTooLong
	}
	return line, err
}

// handle carries out one line from m: a command, or something to say. It reports false after /quit.
func (r *room) handle(m *member, line string) bool {
	line = clean(line)
	if strings.TrimSpace(line) == "" {
		return true
	}
	if !strings.HasPrefix(line, "/") {
		r.mu.Lock()
		r.broadcastLocked(m, m.name+": "+line)
		r.mu.Unlock()
		return true
	}
	verb, args := splitWord(line)
	switch verb {
	case "/nick":
		name, more := splitWord(args)
		switch {
		case name == "" || more != "":
			r.tell(m, "* usage: /nick NAME")
		case !validName(name):
			r.tell(m, "* a name is 1 to 16 letters, digits, _ or -, starting with a letter")
		default:
			r.rename(m, name)
		}
	case "/who":
		if args != "" {
			r.tell(m, "* usage: /who")
			break
		}
		r.mu.Lock()
		names := make([]string, len(r.members))
		for i, o := range r.members {
			names[i] = o.name
		}
		r.mu.Unlock()
		r.tell(m, "* in the room: "+strings.Join(names, ", "))
	case "/msg":
		name, text := splitWord(args)
		if name == "" || text == "" {
			r.tell(m, "* usage: /msg NAME TEXT")
			break
		}
		r.mu.Lock()
		if to := r.findLocked(name); to != nil {
			r.sayLocked(to, m.name+" (private): "+text)
		} else {
			r.sayLocked(m, "* nobody here is called "+name)
		}
		r.mu.Unlock()
	case "/quit":
		r.tell(m, "* bye")
		r.leave(m, "left")
		return false
	case "/help":
		r.tell(m, "* "+help)
	default:
		r.tell(m, "* unknown command "+verb+"; "+help)
	}
	return true
}

// join gives m a default name, greets it and tells the others.
func (r *room) join(m *member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for m.name == "" || r.findLocked(m.name) != nil { // someone may have taken guestN with /nick
		r.guests++
		m.name = fmt.Sprintf("guest%d", r.guests)
	}
	r.members = append(r.members, m)
	r.sayLocked(m, "* welcome, "+m.name+"; "+help)
	r.broadcastLocked(m, "* "+m.name+" joined")
}

func (r *room) rename(m *member, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o := r.findLocked(name); o != nil && o != m {
		r.sayLocked(m, "* the name "+name+" is taken")
		return
	}
	old := m.name
	m.name = name
	r.sayLocked(m, "* you are now "+name)
	r.broadcastLocked(m, "* "+old+" is now "+name)
}

// leave takes m out of the room, once, and tells the others.
func (r *room) leave(m *member, how string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.leaveLocked(m, how)
}

func (r *room) leaveLocked(m *member, how string) {
	i := -1
	for j, o := range r.members {
		if o == m {
			i = j
		}
	}
	if i < 0 {
		return // gone already
	}
	r.members = append(r.members[:i], r.members[i+1:]...)
	m.mu.Lock()
	m.gone = true
	m.mu.Unlock()
	m.signal()
	r.broadcastLocked(m, "* "+m.name+" "+how)
}

func (r *room) findLocked(name string) *member {
	for _, o := range r.members {
		if strings.EqualFold(o.name, name) {
			return o
		}
	}
	return nil
}

// tell queues a line for m alone.
func (r *room) tell(m *member, line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sayLocked(m, line)
}

// broadcastLocked queues line for every member but from. It never waits for anyone; a member that
// cannot keep up is put out (which broadcasts again: the list it walks is copied first).
func (r *room) broadcastLocked(from *member, line string) {
	for _, o := range append([]*member(nil), r.members...) {
		if o != from {
			r.sayLocked(o, line)
		}
	}
}

// sayLocked queues one line for m and wakes its writer.
func (r *room) sayLocked(m *member, line string) {
	m.mu.Lock()
	if m.gone {
		m.mu.Unlock()
		return
	}
	m.out = append(append(m.out, line...), '\n')
	slow := len(m.out) >= r.maxQueue
	if slow {
		m.out = nil // what it has not read is lost: it is leaving
	}
	m.mu.Unlock()
	m.signal()
	if slow {
		r.leaveLocked(m, "was put out: too slow to read")
	}
}

func (m *member) signal() {
	select {
	case m.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// write hands m's queue to the connection whenever there is something in it, all of it in one write,
// until m has left and the queue is empty; then it closes the connection, which also ends the reader.
func (m *member) write() {
	defer close(m.ended)
	defer m.conn.Close()
	var batch []byte
	for range m.wake {
		m.mu.Lock()
		batch, m.out = m.out, batch[:0]
		gone := m.gone
		m.mu.Unlock()
		if len(batch) > 0 {
			if _, err := m.conn.Write(batch); err != nil {
				return // the reader sees the closed connection and leaves
			}
		}
		if gone {
			return
		}
	}
}

// clean removes control characters other than tab, so nobody can send escape sequences to others'
// terminals; invalid UTF-8 becomes U+FFFD.
func clean(line string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\t' {
			return -1
		}
		return r
	}, strings.ToValidUTF8(line, "\uFFFD"))
}

// validName: 1 to 16 ASCII letters, digits, "_" or "-", starting with a letter.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 16 {
		return false
	}
	for i, c := range []byte(s) {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '_' || c == '-')) {
			return false
		}
	}
	return true
}

// splitWord returns the first word of s and the rest, both trimmed.
func splitWord(s string) (word, rest string) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}
