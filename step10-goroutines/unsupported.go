//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "step10-goroutines runs on Linux only, like step05, whose loop it hands to the Go runtime (on Windows, use WSL).")
	os.Exit(2)
}
