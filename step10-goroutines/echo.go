//go:build linux

package main

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// echo gives each client back what it sent: one goroutine per client, reading and writing in turn.
// It needs no queue: Write returns when the kernel has taken every byte, and while it waits, the
// goroutine reads nothing, so a client that does not read is not read from (step03's backpressure,
// for free). The goroutines share nothing but the set of clients, for the shutdown, and the trace.
type echo struct {
	tr       *tracing.Recorder
	stopping atomic.Bool // a signal came: nothing more is echoed

	mu      sync.Mutex       // guards clients, and the trace: one goroutine writes a line at a time
	clients map[net.Conn]int // open clients, with the fd the trace names them by
}

// serve starts the goroutine of a new client.
func (e *echo) serve(c net.Conn, fd int, clients *sync.WaitGroup) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tr.Accept(fd)
	if e.clients == nil {
		e.clients = map[net.Conn]int{}
	}
	e.clients[c] = fd
	clients.Go(func() { e.echo(c, fd) })
}

// echo reads what c sends and writes it back, until c is done (EOF) or gone (an error), in a buffer
// of the client's own: 4 KiB, the size bufio would pick.
func (e *echo) echo(c net.Conn, fd int) {
	buf := make([]byte, 4<<10)
	for {
		n, err := c.Read(buf) // parks this goroutine until c's socket is readable
		if e.stopping.Load() {
			e.linger(c, fd, buf)
			return
		}
		if n > 0 {
			e.record(func() { e.tr.Read(fd, buf[:n]) })
			m, werr := c.Write(buf[:n]) // parks this goroutine while c's socket is full
			if werr != nil {
				e.failed(c, fd, "write", werr)
				return
			}
			e.record(func() { e.tr.Write(fd, m, n) })
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// B1: EOF. Everything read has been written back already: close.
			e.record(func() { e.tr.ReadEOF(fd) })
			e.end(c, "EOF")
			return
		default:
			e.failed(c, fd, "read", err)
			return
		}
	}
}

// failed traces a failed read or write and closes c. A closed socket is not news: closeAll closed
// it, and said so.
func (e *echo) failed(c net.Conn, fd int, op string, err error) {
	if errors.Is(err, net.ErrClosed) {
		return
	}
	e.record(func() { e.tr.Error(fd, op, err) })
	reason := "error"
	if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
		reason = "reset"
	}
	e.end(c, reason)
}

// linger closes c gently, once the server is stopping (step05's signals.go): FIN now, then read and
// throw away what c still sends, until it closes, or the grace ends and closeAll closes it.
func (e *echo) linger(c net.Conn, fd int, buf []byte) {
	c.(*net.TCPConn).CloseWrite()
	e.record(func() { e.tr.Event("linger", fd, "all sent, FIN sent: reading until the client closes") })
	c.SetReadDeadline(time.Time{})
	for {
		n, err := c.Read(buf)
		if n > 0 {
			e.record(func() { e.tr.Read(fd, buf[:n]) }) // thrown away: nobody is listening any more
		}
		switch {
		case errors.Is(err, net.ErrClosed):
			return
		case errors.Is(err, io.EOF):
			e.record(func() { e.tr.ReadEOF(fd) })
			e.end(c, "shutdown")
			return
		case err != nil:
			e.record(func() { e.tr.Error(fd, "read", err) })
			e.end(c, "shutdown")
			return
		}
	}
}

// record writes trace lines, one goroutine at a time; with tracing off, it takes no lock.
func (e *echo) record(lines func()) {
	if e.tr.On() {
		e.mu.Lock()
		lines()
		e.mu.Unlock()
	}
}

// end closes c, once, for the reason the trace gives.
func (e *echo) end(c net.Conn, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fd, open := e.clients[c]
	if !open {
		return
	}
	delete(e.clients, c)
	e.tr.Close(fd, reason) // before Close: the kernel may give the fd number to the next client
	c.Close()
}

// stop stops the echo: every goroutine's Read returns now (a deadline in the past), and each client
// is closed gently once its goroutine sees it (see linger).
func (e *echo) stop(sig syscall.Signal, closeListener func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tr.Note("signal", "%s: stop accepting, send what is queued (at most %v), then exit", unix.SignalName(sig), shutdownGrace)
	closeListener()
	e.stopping.Store(true)
	for c := range e.clients {
		c.SetReadDeadline(time.Now())
	}
}

// closeAll closes every client still open: the grace is over.
func (e *echo) closeAll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for c, fd := range e.clients {
		delete(e.clients, c)
		e.tr.Close(fd, "shutdown")
		c.Close()
	}
}

// refuse tells a client the server is out of fds (step03's words) and closes it.
func (e *echo) refuse(c net.Conn, fd int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tr.Accept(fd)
	c.Write([]byte("server busy: out of file descriptors, try again later\n"))
	e.tr.Close(fd, "refused: out of fds")
	c.Close()
}

// acceptError traces a failed accept.
func (e *echo) acceptError(fd int, err error) {
	e.record(func() { e.tr.Error(fd, "accept", err) })
}
