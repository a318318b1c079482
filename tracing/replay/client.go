//go:build unix

package replay

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing/scenario"
)

// Client is one scripted TCP client. It reads only when a scenario expects something, so a client that
// is never told to expect is a client that stopped reading.
type Client struct {
	Name     string
	fd       int
	sent     int    // pattern bytes sent so far
	received int    // pattern bytes checked so far
	Got      []byte // every byte that arrived, in order
}

// Dial connects a blocking TCP socket to addr (an IP literal and port on loopback). With rcvbuf > 0 the
// receive buffer is set before connecting, when it still shapes the window the kernel advertises.
func Dial(name, addr string, rcvbuf int) (*Client, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %v", addr, err)
	}
	if !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("address %s is not loopback: the lab's clients talk to loopback only", addr)
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ap.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	unix.CloseOnExec(fd)
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("SO_RCVBUF: %w", err)
		}
	}
	for {
		err = unix.Connect(fd, sa)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	return &Client{Name: name, fd: fd}, nil
}

// waitFor polls the client's socket for events until the deadline; it reports whether they came.
func (c *Client) waitFor(events int16, deadline time.Time) (bool, error) {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		fds := []unix.PollFd{{Fd: int32(c.fd), Events: events}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, err
		}
		if n > 0 {
			return true, nil
		}
	}
}

// Send writes all of p, waiting for room in the socket buffer up to within.
func (c *Client) Send(p []byte, within time.Duration) error {
	deadline := time.Now().Add(within)
	for len(p) > 0 {
		ok, err := c.waitFor(unix.POLLOUT, deadline)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s could not send %d more bytes within %v: the server is not reading", c.Name, len(p), within)
		}
		n, err := unix.SendmsgN(c.fd, p, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s send: %w", c.Name, err)
		}
		p = p[n:]
	}
	return nil
}

// SendPattern sends the next n bytes of the client's pattern.
func (c *Client) SendPattern(n int, within time.Duration) error {
	err := c.Send(scenario.Pattern(c.sent, n), within)
	c.sent += n
	return err
}

// ErrClosed and ErrReset are how a read ends when the server closes the connection: a FIN (EOF), or an
// RST (it closed with data from us unread, or reset on purpose).
var (
	ErrClosed = errors.New("the server closed the connection (EOF)")
	ErrReset  = errors.New("the server reset the connection (ECONNRESET)")
)

// readSome waits for bytes until the deadline and appends them to Got. It returns how many arrived
// (0 on timeout), or ErrClosed/ErrReset.
func (c *Client) readSome(max int, deadline time.Time) (int, error) {
	ok, err := c.waitFor(unix.POLLIN, deadline)
	if err != nil || !ok {
		return 0, err
	}
	buf := make([]byte, max)
	n, err := unix.Read(c.fd, buf)
	switch {
	case err == unix.ECONNRESET:
		return 0, ErrReset
	case err != nil:
		return 0, err
	case n == 0:
		return 0, ErrClosed
	}
	c.Got = append(c.Got, buf[:n]...)
	return n, nil
}

// Expect reads exactly len(want) bytes within the bound and compares them.
func (c *Client) Expect(want []byte, within time.Duration) error {
	deadline := time.Now().Add(within)
	start := len(c.Got)
	for len(c.Got)-start < len(want) {
		n, err := c.readSome(len(want)-(len(c.Got)-start), deadline)
		if err != nil {
			return fmt.Errorf("%s expected %s, got %s, then: %v", c.Name, short(want), short(c.Got[start:]), err)
		}
		if n == 0 {
			return fmt.Errorf("%s expected %s within %v, got %s", c.Name, short(want), within, short(c.Got[start:]))
		}
		if got := c.Got[start:]; !bytes.HasPrefix(want, got) {
			break // wrong already: no need to wait for the rest
		}
	}
	if got := c.Got[start:]; !bytes.Equal(got, want) {
		return fmt.Errorf("%s expected %s, got %s", c.Name, short(want), short(got))
	}
	return nil
}

// ExpectPattern reads the next n bytes of the pattern the client's peer is expected to send back.
func (c *Client) ExpectPattern(n int, within time.Duration) error {
	want := scenario.Pattern(c.received, n)
	c.received += n
	return c.Expect(want, within)
}

// ReadLine reads up to and including the next newline, waiting up to within.
func (c *Client) ReadLine(within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	start := len(c.Got)
	for !bytes.HasSuffix(c.Got[start:], []byte("\n")) {
		// One byte at a time: a line must not swallow the bytes after it.
		n, err := c.readSome(1, deadline)
		if err == nil && n == 0 {
			err = fmt.Errorf("no newline within %v", within)
		}
		if err == nil && len(c.Got)-start > scenario.MaxPattern {
			err = fmt.Errorf("no newline in %d bytes", scenario.MaxPattern)
		}
		if err != nil {
			return string(c.Got[start:]), err
		}
	}
	return string(c.Got[start:]), nil
}

// ExpectLine reads the next line and compares it.
func (c *Client) ExpectLine(want []byte, within time.Duration) error {
	got, err := c.ReadLine(within)
	if err != nil {
		return fmt.Errorf("%s expected line %s, got %s, then: %v", c.Name, short(want), short([]byte(got)), err)
	}
	if got != string(want) {
		return fmt.Errorf("%s expected line %s, got %s", c.Name, short(want), short([]byte(got)))
	}
	return nil
}

// ExpectNothing asserts that no byte (and no EOF) arrives for d.
func (c *Client) ExpectNothing(d time.Duration) error {
	start := len(c.Got)
	n, err := c.readSome(64<<10, time.Now().Add(d))
	if err != nil {
		return fmt.Errorf("%s expected nothing for %v: %v", c.Name, d, err)
	}
	if n > 0 {
		return fmt.Errorf("%s expected nothing for %v, got %s", c.Name, d, short(c.Got[start:]))
	}
	return nil
}

// ExpectEOF asserts that the server closes the connection, with no more data before it.
func (c *Client) ExpectEOF(within time.Duration) error {
	start := len(c.Got)
	n, err := c.readSome(64<<10, time.Now().Add(within))
	switch {
	case err == ErrClosed:
		return nil
	case err != nil:
		return fmt.Errorf("%s expected EOF: %v", c.Name, err)
	case n > 0:
		return fmt.Errorf("%s expected EOF, got %s", c.Name, short(c.Got[start:]))
	}
	return fmt.Errorf("%s expected EOF within %v: the connection is still open", c.Name, within)
}

// Shutdown half-closes: the server reads EOF, the client can still read.
func (c *Client) Shutdown() error { return unix.Shutdown(c.fd, unix.SHUT_WR) }

// StopReading shrinks the receive buffer to the kernel's minimum, so that what the server sends piles
// up on the server's side; the client reads again only when a scenario expects something.
func (c *Client) StopReading() error {
	return unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1)
}

// Reset closes with SO_LINGER 0: the kernel sends RST instead of FIN and drops unsent data.
func (c *Client) Reset() error {
	if err := unix.SetsockoptLinger(c.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		return err
	}
	return c.Close()
}

// Close closes the socket (once).
func (c *Client) Close() error {
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// short quotes bytes for an error message, cutting long ones.
func short(p []byte) string {
	const max = 80
	if len(p) <= max {
		return fmt.Sprintf("%q", p)
	}
	return fmt.Sprintf("%q...(%d bytes)", p[:max], len(p))
}
