//go:build unix

package tracetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing/replay"
)

// RaiseFDLimit raises this process's RLIMIT_NOFILE to its hard limit, so that the test and the servers
// it starts (children inherit it) may open more than 1024 fds. It skips the test if the hard limit is
// below need.
func RaiseFDLimit(t testing.TB, need uint64) {
	t.Helper()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max < need {
		t.Skipf("RLIMIT_NOFILE hard limit %d: too low, the test needs %d", lim.Max, need)
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
}

// RefusedPastFDSetSize is B19 for an echo server on select: it connects clients one at a time (one
// round trip each, so the server has accepted a client before the next connects) until well past
// FD_SETSIZE, and checks that the clients whose fd would be 1024 or more are told "server full" and
// closed, that the ones before are still served, and that the trace names each refusal. It returns
// how many were refused. Call RaiseFDLimit first.
func RefusedPastFDSetSize(t testing.TB, s *replay.Session, clients int) int {
	t.Helper()
	var conns []*replay.Client
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	refused := 0
	for i := 1; i <= clients; i++ {
		c, err := replay.Dial(fmt.Sprintf("c%d", i), s.Server().Addr, 0)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns = append(conns, c)
		if err := c.Send([]byte("ping\n"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		line, err := c.ReadLine(10 * time.Second)
		switch {
		case err != nil:
			t.Fatalf("client %d: %v", i, err)
		case strings.HasPrefix(line, "server full"):
			refused++
			// Closed with our ping unread, the kernel sends RST rather than FIN: either ends it.
			if _, err := c.ReadLine(10 * time.Second); err != replay.ErrClosed && err != replay.ErrReset {
				t.Fatalf("client %d was refused but not closed: %v", i, err)
			}
		case line != "ping\n":
			t.Fatalf("client %d got %q, want its echo", i, line)
		case refused > 0:
			t.Fatalf("client %d was served after an earlier one was refused: fds are reused, but none was freed", i)
		}
	}
	if refused == 0 {
		t.Fatalf("all %d clients were served: no fd reached FD_SETSIZE, so the test proved nothing", clients)
	}
	// Everyone who was accepted below the limit is still served.
	for _, c := range conns[:10] {
		if err := c.Send([]byte("still there?\n"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := c.Expect([]byte("still there?\n"), 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Server().Settle(0, false, replay.SettleWithin); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(s.Server().Trace(), "(refused: fd past FD_SETSIZE)\n"); n != refused {
		t.Fatalf("the trace names %d refusals, the clients saw %d", n, refused)
	}
	return refused
}
