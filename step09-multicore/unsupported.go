//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "step09-multicore runs on Linux only: epoll is a Linux system call (kqueue is the BSD/macOS analogue; on Windows, use WSL).")
	os.Exit(2)
}
