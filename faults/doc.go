// Package faults is the lab's fault matrix and soak test: misbehaving clients (resets, half-closes,
// clients that never read, floods, a server out of fds, signals, ...) against every step from step03 on,
// each checked for the same promise: the well-behaved clients are still served and lose nothing, the
// server does not spin, leaks no fd, and its trace says what happened.
//
//	go test ./faults                      the matrix and a short soak (a few seconds)
//	go test ./faults -run Soak -soak 60s  a longer soak
//	go test ./faults -update              rewrite testdata/matrix.txt (the table in docs/faults.md)
//
// All the code is in the tests; see docs/faults.md.
package faults
