//go:build linux

package main

import (
	"fmt"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// A server that is told to stop (Ctrl-C, or SIGTERM from a service manager) should not drop what it
// has queued: it stops accepting and reading, sends what is queued for a short grace, then exits. But
// the loop sleeps in select, which waits on fds, and Go delivers signals on a channel. The self-pipe
// trick joins the two: a goroutine turns each signal into a byte on a pipe, and the loop watches the
// pipe's read end like any socket.

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
