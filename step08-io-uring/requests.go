//go:build linux

package main

// The loop's side of io_uring: which requests each client has in flight, kept in step with what its
// handlers want, and the buffers the kernel reads into. Only the loop (main.go) calls these; the
// handlers never see the ring.

import (
	"cmp"
	"fmt"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// op is the kind of request a completion answers. userData packs it with the id of the client the
// request is for (0: the listener, the signal pipe and the grace), and the completion brings it back.
type op uint8

const (
	opAccept op = iota + 1
	opRecv
	opSend
	opClose
	opCancel
	opSignal  // the read of the signal pipe
	opGrace   // the timeout that ends the shutdown grace
	opProvide // buffers given back to the kernel
	opPoll    // the listener is readable: see main.go, out of fds
)

func userData(id uint64, o op) uint64 { return id<<8 | uint64(o) }

// The provided buffers: bufCount buffers of bufSize bytes, in one mapping. A recv in flight holds none
// of them: the kernel takes one when bytes arrive, and the loop gives it back once the handler has
// read it. So an idle client costs no buffer, however many there are.
const (
	bufGroup = 0
	bufSize  = 32 << 10 // more than any read of the lab's scenarios: a recv takes what step05's read took
	bufCount = 512      // enough for the recvs of most turns at 1000 clients (see starve)
)

// requests is the ring and what is in flight on it.
type requests struct {
	r       *ring
	clients map[uint64]*conn // by id, from accept until the completion of their close
	// Kept beside the clients, not in each conn, and only with tracing on: an idle client pays
	// nothing for it, and idle clients are what a server has most of.
	labels   map[uint64]string // each client's name in the trace
	lastID   uint64
	inFlight int  // requests that will complete: the trace's enter line shows it
	stopping bool // a signal came: nothing more is read or accepted, only what is queued is sent
	bufs     []byte
	// Memory the kernel writes or reads after the submission: in a heap object, which Go never moves
	// (a goroutine's stack moves when it grows, and a local variable may live there).
	sigByte  [1]byte              // the signal pipe's byte
	grace    unix.Timespec        // the shutdown grace
	returned []uint16             // ids of the buffers the turn is done with
	starved  []*conn              // clients whose recv found no buffer (ENOBUFS), to ask again
	next     func(c *conn) []byte // the service's: the bytes c is to receive next, from its cursor
	err      error                // the first submission that failed: the loop stops on it
	tr       *tracing.Recorder
}

// newRequests sets up the ring and hands the kernel every buffer.
func newRequests(tr *tracing.Recorder) (*requests, error) {
	r, err := newRing(4096, 16384)
	if err != nil {
		return nil, err
	}
	// Anonymous memory from mmap, not from Go's heap: the kernel writes into it whenever bytes arrive.
	// A page of it becomes resident when bytes first land in it: the kernel takes the buffers in turn,
	// so under any load most of the pool's first pages soon are, whatever the number of clients.
	bufs, err := unix.Mmap(-1, 0, bufSize*bufCount, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		r.free()
		return nil, fmt.Errorf("mmap the buffers: %w", err)
	}
	q := &requests{r: r, clients: map[uint64]*conn{}, labels: map[uint64]string{}, bufs: bufs, tr: tr}
	q.check(r.provide(uintptr(unsafe.Pointer(&bufs[0])), bufSize, bufCount, 0, bufGroup, userData(0, opProvide)))
	return q, q.err
}

// check keeps the first error of a submission.
func (q *requests) check(err error) {
	if err != nil && q.err == nil {
		q.err = err
	}
}

// add gives a new client its id, never used before, and keeps its trace name.
func (q *requests) add(c *conn) {
	q.lastID++
	c.id = q.lastID
	q.clients[c.id] = c
	if q.tr.On() {
		q.labels[c.id] = q.tr.NameOf(c.fd)
	}
}

// label is c's name in the trace, kept for the completions that come after its close line (which
// forgets the name of the fd: the kernel may give the number to the next client).
func (q *requests) label(c *conn) string { return q.labels[c.id] }

// forget drops what the loop kept about c, once its close has completed.
func (q *requests) forget(c *conn) {
	delete(q.clients, c.id)
	delete(q.labels, c.id)
}

// follow keeps c's requests in step with what its handlers want, as step05's poller kept the interest
// list: a recv in flight while they read from it, a send of its queue while the queue holds bytes
// (one of each at most), and once they are finished with it, cancel and close.
func (q *requests) follow(c *conn) {
	if c.wantClose {
		q.finish(c)
		return
	}
	if (c.wantRead && !q.stopping || c.lingering) && !c.recving && !c.starved {
		q.check(q.r.recv(c.fd, bufGroup, userData(c.id, opRecv)))
		c.recving = true
		q.inFlight++
		q.tr.Submit("recv", q.label(c), 0)
	}
	if c.wantWrite && c.sending == nil {
		if p := q.next(c); len(p) > 0 {
			q.check(q.r.send(c.fd, p, userData(c.id, opSend)))
			c.sending = p
			q.inFlight++
			q.tr.Submit("send", q.label(c), len(p))
		}
	}
}

// finish closes c, whose handlers are finished with it. Closing the fd would not end a recv the
// kernel holds (the request keeps the socket open, and no FIN would go out), and a send in flight still
// reads c's bytes: so it first cancels them, and submits the close once both have completed.
func (q *requests) finish(c *conn) {
	if c.fd < 0 {
		return // its close is submitted already
	}
	if !c.closing {
		c.closing = true
		if c.recving {
			q.check(q.r.cancel(userData(c.id, opRecv), userData(c.id, opCancel)))
			q.tr.Submit("cancel", "recv "+q.label(c), 0)
		}
		if c.sending != nil {
			q.check(q.r.cancel(userData(c.id, opSend), userData(c.id, opCancel)))
			q.tr.Submit("cancel", "send "+q.label(c), 0)
		}
	}
	if c.recving || c.sending != nil {
		return
	}
	q.check(q.r.closeFD(c.fd, userData(c.id, opClose)))
	q.inFlight++
	q.tr.Submit("close", q.label(c), 0)
	c.fd = -1
}

// starve notes c, whose recv completed with ENOBUFS: every buffer was taken when its bytes came. Asked
// again at once, it would fail again while the handlers still hold the buffers, and with a thousand
// clients the loop would spend its turns on recvs that fail (step08 at 1000 connections: a third of
// step05's messages per second). feedStarved asks again once the turn has given the buffers back.
func (q *requests) starve(c *conn) {
	c.starved = true
	q.starved = append(q.starved, c)
}

// feedStarved submits a recv again for as many starved clients as there are buffers, at the end of a
// turn, after giveAllBack: every buffer the turn's completions used is back with the kernel by then.
func (q *requests) feedStarved() {
	n := min(len(q.starved), bufCount)
	for _, c := range q.starved[:n] {
		c.starved = false
		q.follow(c)
	}
	q.starved = append(q.starved[:0], q.starved[n:]...)
}

// buffer returns the provided buffer a recv's completion used, or nil if it used none (an error).
func (q *requests) buffer(cqe io_uring_cqe) []byte {
	if cqe.flags&IORING_CQE_F_BUFFER == 0 {
		return nil
	}
	id := int(cqe.flags >> IORING_CQE_BUFFER_SHIFT)
	return q.bufs[id*bufSize : (id+1)*bufSize]
}

// giveBack notes that the handler is done with a recv's buffer: the turn gives it back (see giveAllBack).
func (q *requests) giveBack(cqe io_uring_cqe) {
	if cqe.flags&IORING_CQE_F_BUFFER != 0 {
		q.returned = append(q.returned, uint16(cqe.flags>>IORING_CQE_BUFFER_SHIFT))
	}
}

// giveAllBack returns the turn's buffers to the kernel, one request for each run of consecutive ids:
// the kernel hands buffers out in the order it was given them, so most turns need one or two. (The
// kernel reads no request before the next io_uring_enter: giving them back earlier in the turn would
// not make them available sooner.)
func (q *requests) giveAllBack() {
	slices.Sort(q.returned)
	for i := 0; i < len(q.returned); {
		j := i + 1
		for j < len(q.returned) && q.returned[j] == q.returned[j-1]+1 {
			j++
		}
		id := q.returned[i]
		q.check(q.r.provide(uintptr(unsafe.Pointer(&q.bufs[int(id)*bufSize])), bufSize, j-i, id, bufGroup, userData(0, opProvide)))
		i = j
	}
	q.returned = q.returned[:0]
}

// byID returns the clients in order of arrival: an order that is the same on every run, for the trace.
func (q *requests) byID() []*conn {
	var cs []*conn
	for _, c := range q.clients {
		cs = append(cs, c)
	}
	slices.SortFunc(cs, func(a, b *conn) int { return cmp.Compare(a.id, b.id) })
	return cs
}
