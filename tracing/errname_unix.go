//go:build unix

package tracing

import (
	"errors"

	"golang.org/x/sys/unix"
)

// ErrName names an error by its errno (ECONNRESET, EPIPE), falling back to its text.
func ErrName(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
	}
	return err.Error()
}
