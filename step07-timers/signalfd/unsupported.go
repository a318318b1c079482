//go:build !linux

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "signalfd runs on Linux only: signalfd and tgkill are Linux system calls.")
	os.Exit(2)
}
