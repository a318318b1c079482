//go:build unix && !linux

package replay

import "errors"

// LimitFDs needs prlimit(2), which only Linux has.
func (s *Server) LimitFDs(free int) error {
	return errors.New("lowering another process's RLIMIT_NOFILE needs Linux's prlimit")
}
