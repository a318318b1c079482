//go:build linux

package main

// The loop's clock. A server must act when nothing happens: a member silent for too long, a line that
// arrives a byte a minute and never ends, the end of the shutdown grace. A goroutine or a timer per
// client would do that behind the loop's back; this loop keeps every clock itself. Each deadline is an
// entry in one min-heap ordered by time; the earliest one becomes epoll_wait's timeout, and after
// every wait the loop takes out each entry whose time has come. Setting, moving or clearing an entry
// costs O(log n) (container/heap), so a server with 10,000 clients pays for the few that spoke in a
// turn, not for every client.

import (
	"container/heap"
	"time"
)

// A deadline is a moment at which the loop must act without being told to by the kernel.
type deadline struct {
	when  time.Time
	c     *conn  // whose deadline it is; nil for the server's own (the shutdown grace)
	why   string // what passes when it comes: "idle", "line" or "shutdown"
	index int    // its place in the heap while it is in it: heap.Fix and heap.Remove need it
}

// deadlines is a min-heap of deadlines, the earliest first (container/heap's interface).
type deadlines []*deadline

func (h deadlines) Len() int           { return len(h) }
func (h deadlines) Less(i, j int) bool { return h[i].when.Before(h[j].when) }
func (h deadlines) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deadlines) Push(x any) {
	d := x.(*deadline)
	d.index = len(*h)
	*h = append(*h, d)
}
func (h *deadlines) Pop() any {
	old := *h
	d := old[len(old)-1]
	old[len(old)-1] = nil // the heap no longer holds it
	*h = old[:len(old)-1]
	return d
}

// has reports whether d is in the heap.
func (h deadlines) has(d *deadline) bool { return d.index < len(h) && h[d.index] == d }

// set puts d in the heap at when, or moves it there if it is in already.
func (h *deadlines) set(d *deadline, when time.Time) {
	d.when = when
	if h.has(d) {
		heap.Fix(h, d.index)
	} else {
		heap.Push(h, d)
	}
}

// clear takes d out of the heap, if it is in.
func (h *deadlines) clear(d *deadline) {
	if h.has(d) {
		heap.Remove(h, d.index)
	}
}

// next returns the earliest deadline, or nil when none is set: then the wait needs no timeout.
func (h deadlines) next() *deadline {
	if len(h) == 0 {
		return nil
	}
	return h[0]
}

// expire takes the earliest deadline out of the heap and returns it if its time is now or past, and
// returns nil if it is not. One at a time: handling one may clear others (a client closed for being
// idle has no line deadline any more).
func (h *deadlines) expire(now time.Time) *deadline {
	if len(*h) == 0 || (*h)[0].when.After(now) {
		return nil
	}
	return heap.Pop(h).(*deadline)
}

// fd is the fd of the client whose deadline d is, or -1 for the server's own: for the trace.
func (d *deadline) fd() int {
	if d.c == nil {
		return -1
	}
	return d.c.fd
}
