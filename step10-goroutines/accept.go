//go:build linux

package main

import (
	"errors"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// acceptAll accepts clients until the listener is closed. Accept parks this goroutine until the
// netpoller reports the listener readable: step05's "ready listener=IN", inside net.
//
// Out of fds is where net's abstraction leaks. accept fails with EMFILE and the client stays in the
// backlog (step05's accept.go); net's Accept calls accept(2) first and waits only when it says EAGAIN,
// so calling it again would fail again at once, forever: a busy loop. So a client who waits is refused
// with the spare fd, as in step05, and when nobody waits, this goroutine sleeps before it tries again,
// 5 ms, then twice as long each time up to a second, as net/http's Serve does.
func acceptAll(ln *net.TCPListener, sndbuf int, svc service, clients *sync.WaitGroup) {
	spare, _ := os.Open(os.DevNull) // the fd kept spare for when there are none
	defer func() { spare.Close() }()
	var delay time.Duration // how long to sleep after the next failed accept
	for {
		c, err := ln.Accept()
		switch {
		case errors.Is(err, net.ErrClosed):
			return // stopping
		case err != nil:
			svc.acceptError(fdOf(ln), err)
			outOfFDs := errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE)
			if outOfFDs && waiting(ln) {
				spare = refuse(ln, spare, svc)
				continue
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
		default:
			delay = 0
			if sndbuf > 0 {
				c.(*net.TCPConn).SetWriteBuffer(sndbuf) // net has set TCP_NODELAY already, as step05 does by hand
			}
			svc.serve(c, fdOf(c.(*net.TCPConn)), clients)
		}
	}
}

// refuse gives back the spare fd, accepts the waiting client with it, tells it why and closes it, and
// takes the spare again, which it returns.
func refuse(ln *net.TCPListener, spare *os.File, svc service) *os.File {
	spare.Close()
	if c, err := ln.Accept(); err == nil {
		svc.refuse(c, fdOf(c.(*net.TCPConn)))
	}
	spare, _ = os.Open(os.DevNull)
	return spare
}

// waiting asks the kernel, without waiting, whether a client waits in the listener's backlog.
func waiting(ln *net.TCPListener) bool {
	raw, err := ln.SyscallConn()
	if err != nil {
		return false
	}
	ready := false
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		ready = err == nil && n > 0
	})
	return ready
}
