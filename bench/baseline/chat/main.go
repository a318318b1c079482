// Command chat is the bench's baseline chat room: the lab's room (step04) as a Go programmer would write
// it without an event loop. Each member has two goroutines, one reading its lines and one writing what
// the room sends it, joined by a buffered channel; the room is a map under a mutex.
//
// Wire protocol, as step04's: a client sends lines; the others receive "name: text". A member gets a
// default name on joining and may change it with /nick NAME; joins, leaves and renames are announced to
// the others. A member too slow to read (its channel full) is disconnected, so nobody waits for it.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	maxLine = 1024 // longer lines are refused
	backlog = 1024 // lines a member may have waiting before it counts as too slow
)

// A member is one client in the room.
type member struct {
	conn net.Conn
	name string      // guarded by room.mu
	out  chan string // lines for this member; closed when it leaves
}

// The room is everyone connected.
type room struct {
	mu      sync.Mutex
	members map[*member]bool
	joined  int // for default names
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "baseline-chat: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "baseline-chat: listening on %s\n", ln.Addr())
	r := &room{members: map[*member]bool{}}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintf(os.Stderr, "baseline-chat: accept: %v\n", err)
			time.Sleep(10 * time.Millisecond) // out of fds, say: do not spin
			continue
		}
		go r.serve(c)
	}
}

// serve runs one member: it joins, its lines go to the others, and it leaves when its connection ends.
func (r *room) serve(c net.Conn) {
	m := &member{conn: c, out: make(chan string, backlog)}
	go m.write()
	r.mu.Lock()
	r.joined++
	m.name = fmt.Sprintf("guest%d", r.joined)
	r.members[m] = true
	r.mu.Unlock()
	m.send("welcome, " + m.name + "\n")
	r.broadcast(m, "* "+m.name+" joined\n")

	s := bufio.NewScanner(c)
	s.Buffer(make([]byte, 0, 256), maxLine)
	for s.Scan() {
		line := strings.TrimSuffix(s.Text(), "\r")
		if nick, ok := strings.CutPrefix(line, "/nick "); ok {
			r.rename(m, strings.TrimSpace(nick))
			continue
		}
		if line == "/who" {
			m.send(r.who())
			continue
		}
		r.mu.Lock()
		name := m.name
		r.mu.Unlock()
		r.broadcast(m, name+": "+line+"\n")
	}
	if s.Err() == bufio.ErrTooLong {
		m.send("line too long: the limit is 1024 bytes; goodbye\n")
	}
	r.leave(m)
}

// broadcast queues line for everyone but from. It never blocks: a member whose queue is full is
// disconnected instead.
func (r *room) broadcast(from *member, line string) {
	var slow []*member
	r.mu.Lock()
	for m := range r.members {
		if m == from {
			continue
		}
		select {
		case m.out <- line:
		default:
			slow = append(slow, m)
		}
	}
	r.mu.Unlock()
	for _, m := range slow {
		m.conn.Close() // its reader then fails and it leaves
	}
}

// send queues a line for m alone.
func (m *member) send(line string) {
	select {
	case m.out <- line:
	default:
		m.conn.Close()
	}
}

// rename handles /nick: a name is one word, and nobody else's.
func (r *room) rename(m *member, nick string) {
	r.mu.Lock()
	ok := nick != "" && !strings.ContainsAny(nick, " \t:") && len(nick) <= 32
	for o := range r.members {
		if o != m && o.name == nick {
			ok = false
		}
	}
	old := m.name
	if ok {
		m.name = nick
	}
	r.mu.Unlock()
	if !ok {
		m.send("name " + nick + " is taken or invalid\n")
		return
	}
	r.broadcast(m, "* "+old+" is now "+nick+"\n")
}

// who lists the room's members.
func (r *room) who() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var names []string
	for m := range r.members {
		names = append(names, m.name)
	}
	slices.Sort(names)
	return "* here: " + strings.Join(names, " ") + "\n"
}

// leave takes m out of the room and tells the others, once.
func (r *room) leave(m *member) {
	r.mu.Lock()
	if !r.members[m] {
		r.mu.Unlock()
		return
	}
	delete(r.members, m)
	name := m.name
	r.mu.Unlock()
	close(m.out)
	r.broadcast(m, "* "+name+" left\n")
}

// write sends m its queued lines, batching what has piled up into one write, until the room closes the
// queue; then it closes the connection.
func (m *member) write() {
	w := bufio.NewWriter(m.conn)
	for line := range m.out {
		w.WriteString(line)
		for more := true; more; {
			select {
			case l, ok := <-m.out:
				if !ok {
					more = false
					break
				}
				w.WriteString(l)
			default:
				more = false
			}
		}
		if w.Flush() != nil {
			m.conn.Close()
			for range m.out { // drain until leave closes the queue
			}
			return
		}
	}
	m.conn.Close()
}
