package tracetest

// What a server holds, read from the kernel (/proc), and ways to load it: for the epoll steps' tests.

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
)

// OpenFDs returns the fds process pid has open, each with what it is (readlink of /proc/PID/fd/N).
func OpenFDs(t testing.TB, pid int) map[int]string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Skipf("needs /proc: %v", err)
	}
	fds := map[int]string{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		what, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fds[fd] = what
	}
	return fds
}

// InterestList returns the events of each fd in the server's own epoll interest list, by fd. Its epoll
// fd is the one that does not watch the runtime's eventfd.
func InterestList(t testing.TB, pid int) []uint32 {
	t.Helper()
	tfd := regexp.MustCompile(`(?m)^tfd:\s+(\d+) events:\s+([0-9a-f]+)`)
	fds := OpenFDs(t, pid)
	for fd, what := range fds {
		if what != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
		if err != nil {
			t.Fatal(err)
		}
		events := map[int]uint32{}
		runtimes := false
		for _, m := range tfd.FindAllStringSubmatch(string(info), -1) {
			n, _ := strconv.Atoi(m[1])
			runtimes = runtimes || fds[n] == "anon_inode:[eventfd]"
			ev, _ := strconv.ParseUint(m[2], 16, 32)
			events[n] = uint32(ev)
		}
		if runtimes {
			continue
		}
		var list []uint32 // by fd: the listener first, then the clients in the order they came
		for _, fd := range slices.Sorted(maps.Keys(events)) {
			list = append(list, events[fd])
		}
		return list
	}
	t.Fatal("no epoll fd of the server's own")
	return nil
}

// EventNames names each set of epoll events, for a failure message.
func EventNames(events []uint32) []string {
	var s []string
	for _, e := range events {
		s = append(s, tracing.EpollEvents(e))
	}
	return s
}

// LimitFDs lowers the server's soft RLIMIT_NOFILE (with prlimit(2), once it is up) to the lowest fd
// number it does not use: from then on it can open nothing more, until it closes something. (A limit
// set before starting it would not do: a Go program raises its soft limit to the hard one at start.)
func LimitFDs(t testing.TB, srv *replay.Server) {
	t.Helper()
	free := 0
	for _, fd := range srv.FDs() {
		if fd == free {
			free++
		}
	}
	var lim unix.Rlimit
	if err := unix.Prlimit(srv.Pid(), unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = uint64(free)
	if err := unix.Prlimit(srv.Pid(), unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatal(err)
	}
}

// DialMany connects n clients one after the other, each with one round trip (so the server has
// accepted it), and resets them when the test ends.
func DialMany(t testing.TB, addr string, n int) []*replay.Client {
	t.Helper()
	RaiseFDLimit(t, uint64(n)+64)
	conns := make([]*replay.Client, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Reset() // an RST leaves no TIME_WAIT behind: -count=10 would use up the ephemeral ports
		}
	})
	for i := 1; i <= n; i++ {
		c, err := replay.Dial(fmt.Sprintf("c%d", i), addr, 0)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns = append(conns, c)
		if err := RoundTrip(c, "ping\n"); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	return conns
}

// RoundTrip sends line and expects it back: an echo's answer.
func RoundTrip(c *replay.Client, line string) error {
	if err := c.Send([]byte(line), 10*time.Second); err != nil {
		return err
	}
	return c.Expect([]byte(line), 10*time.Second)
}
