//go:build !unix

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "live runs on Linux and macOS (on Windows, use WSL): it starts the steps as the replayer does.")
	os.Exit(2)
}
