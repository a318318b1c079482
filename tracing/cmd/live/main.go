//go:build unix

// Command live serves a page that shows a step's event loop move: replayed scenarios turn by turn, a
// live server driven by buttons that act on real sockets, and two steps compared on one scenario.
//
//	go run ./tracing/cmd/live                 # http://127.0.0.1:8080/
//	go run ./tracing/cmd/live -addr 127.0.0.1:9000
//
// It listens on loopback only, and everything the page needs is inside the binary. Ending it (Ctrl-C)
// ends every live session: no server it started and no socket stays behind.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"muxlab/tracing/live"
	"muxlab/tracing/replay"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "where to serve the page: a loopback address and port")
	root := flag.String("root", "", "the muxlab module's folder (default: the one that holds the current folder)")
	flag.Parse()
	if err := run(*addr, *root); err != nil {
		fmt.Fprintf(os.Stderr, "live: %v\n", err)
		os.Exit(1)
	}
}

func run(addr, root string) error {
	if err := loopbackOnly(addr); err != nil {
		return err
	}
	if root == "" {
		var err error
		if root, err = moduleRoot(); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := live.New(root)
	defer replay.Cleanup() // the step binaries it built
	defer srv.Close()      // before Cleanup: the sessions' servers run those binaries
	fmt.Printf("muxlab live view: http://%s/\n", ln.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- http.Serve(ln, srv) }()
	select {
	case sig := <-stop:
		fmt.Printf("%v: ending the live sessions\n", sig)
		ln.Close()
		return nil
	case err := <-served:
		return err
	}
}

// loopbackOnly refuses an address that is not on loopback: the page starts servers and opens
// sockets for whoever can reach it.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %v", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: not a loopback address (use 127.0.0.1 or [::1]): the page starts servers for whoever can reach it", addr)
	}
	return nil
}

// moduleRoot finds the folder of go.mod from the current folder up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "tracing", "replay")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the muxlab module: run it from the repository, or give -root")
		}
		dir = parent
	}
}
