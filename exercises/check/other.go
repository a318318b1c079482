//go:build !unix

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "exercises/check runs on Linux and macOS (on Windows, use WSL).")
	os.Exit(2)
}
