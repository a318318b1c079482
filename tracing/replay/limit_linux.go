package replay

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// LimitFDs lowers the server's RLIMIT_NOFILE (soft and hard, so that it cannot raise it again) to leave
// exactly free more fds below the limit: the next accept after those fails with EMFILE.
func (s *Server) LimitFDs(free int) error {
	fds := s.FDs()
	if fds == nil {
		return fmt.Errorf("no /proc to count the server's fds")
	}
	limit, used := 0, 0 // used: how many open fds are below limit
	for limit-used < free {
		if slices.Contains(fds, limit) {
			used++
		}
		limit++
	}
	lim := unix.Rlimit{Cur: uint64(limit), Max: uint64(limit)}
	return unix.Prlimit(s.Pid(), unix.RLIMIT_NOFILE, &lim, nil)
}
