//go:build linux

package grade

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Resource limits of a student's server. Not RLIMIT_AS: the Go runtime reserves hundreds of
// megabytes of address space at start, which it never touches, so a bound on it kills healthy
// servers; RLIMIT_DATA counts only the memory it makes writable.
const (
	limitFDs  = 1024      // select's FD_SETSIZE: no scenario needs more
	limitData = 512 << 20 // bytes of heap and other writable memory
)

// limit sets the server's resource limits, soft and hard (so that it cannot raise them again), as soon
// as it runs: it has run for the few microseconds before, which no student program can use to escape.
// cpu is RLIMIT_CPU, past which the kernel stops it with SIGXCPU.
func limit(pid int, cpu time.Duration) error {
	for _, l := range []struct {
		resource int
		value    uint64
	}{
		{unix.RLIMIT_NOFILE, limitFDs},
		{unix.RLIMIT_DATA, limitData},
		{unix.RLIMIT_CPU, uint64(max(cpu/time.Second, 1))},
	} {
		lim := unix.Rlimit{Cur: l.value, Max: l.value}
		if err := unix.Prlimit(pid, l.resource, &lim, nil); err != nil {
			return fmt.Errorf("prlimit %d: %w", l.resource, err)
		}
	}
	return nil
}

// demand is the time process pid has wanted a CPU: the time its threads ran plus the time they waited,
// runnable, for a CPU (/proc/PID/task/TID/schedstat). On a loaded machine a spinning server may get
// less than half a core, but it always wants a whole one. Without schedstat it is the CPU time alone.
func demand(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread just ended
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		run, _ := strconv.ParseInt(f[0], 10, 64)
		wait, _ := strconv.ParseInt(f[1], 10, 64)
		ns += run + wait
	}
	if len(tasks) == 0 {
		return cpuTime(pid)
	}
	return time.Duration(ns)
}

// cpuTime is the user and system time of process pid (/proc/PID/stat, in 10 ms ticks).
func cpuTime(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	var ticks int64
	for _, k := range []int{14, 15} { // utime and stime, numbered as in proc(5)
		v, _ := strconv.ParseInt(f[k-3], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// sockets counts the sockets process pid holds open (-1 if it cannot tell). The grader counts
// sockets, not every fd: the Go runtime opens fds of its own when it first needs them.
func sockets(pid int) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}
