//go:build linux

package main

import "golang.org/x/sys/unix"

// What the handlers' reads and writes become on a completion loop. A handler of step05 called
// unix.Read and unix.Write itself, once epoll said the socket was ready. Here the kernel has done the
// recv or the send already, when the loop calls the handler: the handler takes its result, with the
// same meaning (bytes, 0 for EOF, or an errno), and the rest of the handler is step05's.

// recvResult is the handler's read: what the recv that just completed put in buf (the kernel's
// choice of buffer), as unix.Read would say it. Asked again in the same turn, it says EAGAIN: only
// the next completion brings more.
func (c *conn) recvResult(buf []byte) (int, error) { return c.take(opRecv) }

// sendResult is the handler's write of p: how many of p's bytes the send that just completed took
// (the loop submitted p, or the front of it, from the same cursor). Asked again in the same turn, it
// says EAGAIN: the loop submits the rest.
func (c *conn) sendResult(p []byte) (int, error) { return c.take(opSend) }

func (c *conn) take(o op) (int, error) {
	if c.got != o {
		return -1, unix.EAGAIN
	}
	c.got = 0
	if c.res < 0 {
		return -1, unix.Errno(-c.res)
	}
	return int(c.res), nil
}
