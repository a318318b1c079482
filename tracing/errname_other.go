//go:build !unix

package tracing

// ErrName names an error; without errno names on this system, by its text.
func ErrName(err error) string { return err.Error() }
