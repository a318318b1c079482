//go:build !(linux || darwin)

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "chat client: this client waits on the keyboard and the socket with one select(2), and on Windows select accepts sockets only (the seed's WinError 10038, B18); run it on Linux or macOS (on Windows, in WSL).")
	os.Exit(2)
}
