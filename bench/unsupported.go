//go:build !linux

// Command bench measures the lab's servers; it reads /proc and drives load with epoll, so it runs on
// Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench: runs on Linux only (it reads /proc and uses epoll)")
	os.Exit(2)
}
