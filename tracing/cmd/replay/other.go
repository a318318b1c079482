//go:build !unix

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "replay runs on Linux and macOS (on Windows, use WSL): its clients use golang.org/x/sys/unix.")
	os.Exit(2)
}
