//go:build unix

package tracetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"muxlab/tracing/replay"
)

// Sockets counts the sockets the server holds open (Linux: /proc/PID/fd). Tests that check that a
// client's fd was given back count sockets, not every fd: the Go runtime opens fds of its own (its
// epoll fd, an eventfd, a pipe) when it first needs them, which may be between a test's two counts.
func Sockets(t testing.TB, srv *replay.Server) int {
	t.Helper()
	return CountFDs(t, srv, "socket:")
}

// CountFDs counts the server's open fds whose target starts with prefix ("socket:", "/dev/null").
func CountFDs(t testing.TB, srv *replay.Server, prefix string) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", srv.Pid())
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, prefix) {
			n++
		}
	}
	return n
}
