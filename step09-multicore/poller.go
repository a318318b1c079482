//go:build linux

package main

// The loop's side of epoll: the interest list, kept in step with what each client wants. Only the
// loop (main.go) calls these; the handlers never see epoll.

import (
	"fmt"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// poller is the loop's side of epoll: the epoll instance, and the clients in its interest list, by
// fd: epoll says which fd is ready, this says whose it is and what epoll is asked about it. A slice
// indexed by fd does that in a few bytes a client: the kernel hands out the lowest free fd, so the
// numbers stay dense, as in its own fd table.
type poller struct {
	ep       int
	clients  []watched // clients[fd]: the client on fd, if any
	stopping bool      // a signal came: nothing more is read or accepted, only what is queued is sent
	deaf     bool      // another loop's inbox is full: no client is read until it has room (inbox.go)
	tr       *tracing.Recorder
}

// watched is one client in the interest list, and what epoll is asked about it now.
type watched struct {
	c      *conn
	events uint32
}

// newPoller creates the epoll instance: an fd whose interest list lives in the kernel.
func newPoller(tr *tracing.Recorder) (*poller, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	return &poller{ep: ep, tr: tr}, nil
}

// Events that send the loop to a handler. A reset or an error (ERR, HUP: epoll reports them unasked)
// goes to both, as select reported such a socket readable and writable: the call then fails and says why.
const (
	readEvents  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLERR | unix.EPOLLHUP
	writeEvents = unix.EPOLLOUT | unix.EPOLLERR | unix.EPOLLHUP
)

// interest is what epoll is asked about c: what c's handlers want, as step 03 and step 04 rebuilt
// their lists from it every turn. Readable while they read from c (RDHUP: and say so when the client
// has sent FIN), writable while its queue holds bytes: EPOLLOUT with an empty queue would wake the
// loop for nothing.
func (p *poller) interest(c *conn) uint32 {
	var events uint32
	if c.wantRead && !p.stopping && !p.deaf || c.lingering {
		events |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if c.wantWrite {
		events |= unix.EPOLLOUT
	}
	return events
}

// add puts fd in the interest list, asking for events.
func (p *poller) add(fd int, events uint32) error {
	if err := unix.EpollCtl(p.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)}); err != nil {
		return err
	}
	p.tr.EpollCtl(unix.EPOLL_CTL_ADD, fd, events)
	return nil
}

// remove takes fd out of the interest list. DEL before close: epoll watches the open file, not the
// fd number, and a copy of it left open elsewhere (a dup, a child's) would keep its events coming for
// a number that is no longer ours. (The trace shows no line for it: the close line says it.)
func (p *poller) remove(fd int) {
	unix.EpollCtl(p.ep, unix.EPOLL_CTL_DEL, fd, nil)
	p.tr.EpollCtl(unix.EPOLL_CTL_DEL, fd, 0)
}

// watch adds a new client to the interest list. If the kernel cannot take one more (ENOMEM, or ENOSPC
// past fs.epoll.max_user_watches), the client is closed, and the others are served as before.
func (p *poller) watch(c *conn) bool {
	events := p.interest(c)
	if err := p.add(c.fd, events); err != nil {
		p.tr.Error(c.fd, "epoll_ctl", err)
		unix.Close(c.fd)
		p.tr.Close(c.fd, "error")
		return false
	}
	for len(p.clients) <= c.fd {
		p.clients = append(p.clients, watched{}) // append grows the slice by doubling: few copies
	}
	p.clients[c.fd] = watched{c: c, events: events}
	return true
}

// follow keeps the interest list in step with what c wants: one epoll_ctl MOD if that changed, none
// if not, and DEL and close once its handlers are finished with it.
func (p *poller) follow(c *conn) {
	if c.fd < 0 {
		return // forgotten already
	}
	if c.wantClose {
		p.forget(c)
		return
	}
	w := &p.clients[c.fd]
	if want := p.interest(c); want != w.events {
		unix.EpollCtl(p.ep, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: want, Fd: int32(c.fd)})
		w.events = want
		p.tr.EpollCtl(unix.EPOLL_CTL_MOD, c.fd, want)
	}
}

// forget takes c out of the interest list, then closes it (B2: a finished client gives its fd back).
func (p *poller) forget(c *conn) {
	p.remove(c.fd)
	unix.Close(c.fd)
	p.clients[c.fd] = watched{}
	c.fd = -1
}

// byFD returns the clients in order of fd: an order that is the same on every run, for the trace.
func (p *poller) byFD() []*conn {
	var cs []*conn
	for _, w := range p.clients {
		if w.c != nil {
			cs = append(cs, w.c)
		}
	}
	return cs
}
