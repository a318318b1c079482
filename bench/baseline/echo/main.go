// Command echo is the bench's baseline echo server: what a Go programmer would write instead of an event
// loop. The net package and the runtime's netpoller do the multiplexing (with epoll, on Linux); the
// program itself is one goroutine per connection, each blocking in Read and Write.
//
// The steps are measured against it: same wire behaviour (bytes in, same bytes back), same flags
// (-addr, and "listening on ADDR" on stderr, which the bench reads to find the port).
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "baseline-echo: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "baseline-echo: listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			// Out of fds, for example: say so, pause as net/http does so as not to spin, and keep
			// serving the clients already connected.
			fmt.Fprintf(os.Stderr, "baseline-echo: accept: %v\n", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go echo(c)
	}
}

// echo copies what c sends back to c until c closes. The buffer is this connection's own: 4 KiB, the
// size bufio would pick, lives as long as the connection does.
func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // io.EOF: the client is done; anything else: it is gone
		}
	}
}
