// Command flood is a broken server for the replayer's tests. For each client it accepts it prints
// -lines trace lines and answers "nope\n"; with -crash it complains on stderr and exits 1 instead,
// the way a student's server dies of "select: bad file descriptor".
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "where to listen")
	lines := flag.Int("lines", 0, "trace lines to print for each client")
	crash := flag.Bool("crash", false, "exit 1 at the first client")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "flood: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "flood: listening on %s\n", ln.Addr())
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	fmt.Fprintln(out, "listen     listener")
	out.Flush()
	var clients []net.Conn // held, so that no client is closed behind the test's back
	for i := 1; ; i++ {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintf(os.Stderr, "flood: %v\n", err)
			os.Exit(1)
		}
		clients = append(clients, c)
		fmt.Fprintf(out, "accept     c%d\n", i)
		if *crash {
			out.Flush()
			for k := 1; k <= 7; k++ {
				fmt.Fprintf(os.Stderr, "flood: complaint %d\n", k)
			}
			fmt.Fprintln(os.Stderr, "flood: select: bad file descriptor")
			os.Exit(1)
		}
		for k := 1; k <= *lines; k++ {
			fmt.Fprintf(out, "flood      c%d line %d\n", i, k)
		}
		out.Flush()
		c.Write([]byte("nope\n"))
	}
}
