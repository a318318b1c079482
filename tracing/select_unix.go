//go:build unix

package tracing

import "golang.org/x/sys/unix"

// SelectReady records what select reported ready, from what the loop already has: the fds it asked
// about, in the order it asked, and the sets select wrote its answer into. The loop keeps no list
// for the trace.
func (r *Recorder) SelectReady(read, write []int, readable, writable *unix.FdSet) {
	if r == nil {
		return
	}
	r.Selected(isSet(read, readable), isSet(write, writable), nil)
}

// isSet returns the fds of watched that select left set in set, in the order of watched.
func isSet(watched []int, set *unix.FdSet) []int {
	var fds []int
	for _, fd := range watched {
		if set.IsSet(fd) {
			fds = append(fds, fd)
		}
	}
	return fds
}
