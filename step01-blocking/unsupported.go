//go:build !(linux || darwin)

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "step01-blocking runs on Linux and macOS (on Windows, use WSL): it uses golang.org/x/sys/unix, which Windows does not have.")
	os.Exit(2)
}
