//go:build !(linux || darwin)

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "step03-write-queues runs on Linux and macOS (on Windows, use WSL): it needs select(2) on sockets from golang.org/x/sys/unix.")
	os.Exit(2)
}
