//go:build linux

package main

// How the loops talk: each loop has an inbox, the one thing of a loop that other loops touch. A
// sender appends under the inbox's mutex and, if the inbox was empty, writes to its eventfd, which
// sits in the owner's interest list like any socket: the owner sleeps in epoll_wait, not on the
// mutex. Each loop keeps what it has for the others in its mail during a turn and posts it at the end
// of the turn, one post per loop however many lines the turn read.

import (
	"encoding/binary"
	"sync"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// message is what one loop sends another: a new client dealt to it, or a line for its part of the
// room.
type message struct {
	from int    // the loop that sent it
	c    *conn  // a client the acceptor dealt to this loop, or nil
	name string // the dealt client's name in the trace
	to   int    // a private line's member (its registry id); 0: a line for every member
	at   int    // a line for every member: the room's clock when it was said (registry.go)
	line string
	room bool // the sender's inbox, full before, has room again: read the clients again
}

// inboxLimit bounds what an inbox holds, in bytes of lines. A loop that posts past it stops reading
// its clients (their bytes wait in the kernel, and they slow down, as step 03's backpressure does)
// until the owner has taken what it holds; the owner never stops taking, so two loops that fill each
// other's inboxes still drain them. Without a bound, a loop that reads faster than another delivers
// (a flood, a loop short of CPU) would grow the other's inbox without limit.
const inboxLimit = 1 << 20

// inbox is one loop's mailbox.
type inbox struct {
	mu     sync.Mutex
	msgs   []message // posted and not yet taken, in the order they were posted
	closed bool      // the owner has exited: nothing more is taken
	efd    int       // readable while msgs may hold something: the owner's epoll watches it
	bytes  int       // the bytes of lines in msgs
	full   bool      // bytes passed inboxLimit: the senders stopped reading, and wait for room
}

func newInbox() (*inbox, error) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	return &inbox{efd: efd}, err
}

// one is what a write to an eventfd adds to its count: 1, as 8 bytes in the machine's byte order.
var one = binary.NativeEndian.AppendUint64(nil, 1)

// post appends msgs and wakes the owner if the inbox was empty (a non-empty one has a wake-up on
// the way already). The eventfd is written under the lock, so that it cannot have been closed by an
// owner that exits in between. It reports false if the owner has exited, and whether the inbox is
// full now.
func (in *inbox) post(msgs []message) (ok, full bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false, false
	}
	if len(in.msgs) == 0 {
		unix.Write(in.efd, one)
	}
	in.msgs = append(in.msgs, msgs...)
	for _, m := range msgs {
		in.bytes += len(m.line)
	}
	in.full = in.full || in.bytes > inboxLimit
	return true, in.full
}

// take returns every message posted so far, in order, and keeps spare (emptied) for the next ones;
// wasFull says that senders have stopped reading for want of room. It reads the eventfd first, which
// sets its count back to 0: a message posted after the read is either among those taken, or wakes the
// owner again.
func (in *inbox) take(spare []message) (msgs []message, wasFull bool) {
	var count [8]byte
	unix.Read(in.efd, count[:])
	in.mu.Lock()
	defer in.mu.Unlock()
	msgs, wasFull = in.msgs, in.full
	in.msgs, in.bytes, in.full = spare[:0], 0, false
	return msgs, wasFull
}

// isFull reports whether the inbox has passed its limit and not been emptied since.
func (in *inbox) isFull() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.full
}

// close is the owner's last act: later posts fail, and clients dealt to it but never taken are closed.
func (in *inbox) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
	for _, m := range in.msgs {
		if m.c != nil {
			unix.Close(m.c.fd)
		}
	}
	in.msgs = nil
	unix.Close(in.efd)
}

// mail is what one loop has for the others this turn, by loop.
type mail struct {
	from    int
	inboxes []*inbox // every loop's, by number (its own too)
	out     [][]message
}

// send keeps msg for loop to, until the end of the turn.
func (m *mail) send(to int, msg message) {
	msg.from = m.from
	m.out[to] = append(m.out[to], msg)
}

// sendOthers keeps msg for every other loop.
func (m *mail) sendOthers(msg message) {
	for to := range m.inboxes {
		if to != m.from {
			m.send(to, msg)
		}
	}
}

// flush posts what the turn has for each loop, one post each, and reports whether an inbox it posted
// to is full. A client dealt to a loop that has exited (the server is stopping) is closed here.
func (m *mail) flush(tr *tracing.Recorder) (full bool) {
	for to, msgs := range m.out {
		if len(msgs) == 0 {
			continue
		}
		tr.Note("post", "L%d %d message(s)", to, len(msgs)) // before the post: the trace shows cause before effect
		ok, over := m.inboxes[to].post(msgs)
		full = full || over
		if !ok {
			for _, msg := range msgs {
				if msg.c != nil {
					unix.Close(msg.c.fd)
					tr.Note("close", "%s (shutdown: L%d has stopped)", msg.name, to)
				}
			}
		}
		clear(msgs) // no pointers kept alive by a slice that is reused
		m.out[to] = msgs[:0]
	}
	return full
}

// anyFull reports whether an inbox of another loop is full.
func (m *mail) anyFull() bool {
	for to, in := range m.inboxes {
		if to != m.from && in.isFull() {
			return true
		}
	}
	return false
}
