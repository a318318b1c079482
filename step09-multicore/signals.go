//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
)

// A server that is told to stop (Ctrl-C, or SIGTERM from a service manager) should not drop what it
// has queued: it stops accepting and reading, sends what is queued for a short grace, then exits. But
// the loop sleeps in select, which waits on fds, and Go delivers signals on a channel. The self-pipe
// trick joins the two: a goroutine turns each signal into a byte on a pipe, and the loop watches the
// pipe's read end like any socket.
//
// Closing a socket whose client has sent bytes the server has not read makes the kernel send a reset,
// not a FIN, and a reset can destroy what the client has not read yet: the last lines, "the server is
// stopping". So a stopping server closes gently, as nginx does (lingering close): once a client has
// been sent everything, the server shuts down its own side (FIN), reads and throws away what the
// client still sends, and closes when the client closes too, or when the grace ends.

// signalPipe returns the read end of a pipe that receives one byte for each SIGINT or SIGTERM.
func signalPipe() (int, error) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		return -1, fmt.Errorf("pipe: %w", err)
	}
	for _, fd := range p {
		unix.CloseOnExec(fd)
		unix.SetNonblock(fd, true)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, unix.SIGINT, unix.SIGTERM)
	go func() {
		for sig := range signals {
			unix.Write(p[1], []byte{byte(sig.(unix.Signal))})
		}
	}()
	return p[0], nil
}

// linger starts the gentle close of a client that has been sent everything: FIN now, and from now on
// the loop reads it with discard, until it closes.
func linger(c *conn, tr *tracing.Recorder) {
	unix.Shutdown(c.fd, unix.SHUT_WR)
	c.lingering = true
	tr.Event("linger", c.fd, "all sent, FIN sent: reading until the client closes")
}

// discard reads what a lingering client still sends and throws it away, until its socket is empty
// (a few reads at most: a client that floods is closed when the grace ends); its EOF, or an error,
// ends it.
func discard(c *conn, buf []byte, tr *tracing.Recorder) {
	for range 4 {
		n, err := unix.Read(c.fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			tr.Again(c.fd, "read")
			return
		case err != nil:
			tr.Error(c.fd, "read", err)
			end(c, "shutdown", tr)
			return
		case n == 0:
			tr.ReadEOF(c.fd)
			end(c, "shutdown", tr)
			return
		}
		tr.Read(c.fd, buf[:n]) // thrown away: nobody is listening any more
	}
}
