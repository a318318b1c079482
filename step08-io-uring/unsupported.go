//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "step08-io-uring runs on Linux only: io_uring is a Linux interface (on Windows, use WSL).")
	os.Exit(2)
}
