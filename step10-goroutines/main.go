//go:build linux

// Step 10: the chat room (and, with -echo, the echo) as a Go programmer writes it: package net, one
// goroutine per client. No parent: this program has no loop of its own.
//
// It still has one. net.Listen and Accept make every socket nonblocking and register it with the Go
// runtime's netpoller: one epoll instance per process, as in step05. A goroutine that reads a socket
// with nothing to read is parked (it costs no thread); the runtime's epoll_pwait says which sockets are
// ready, and the scheduler hands the goroutines parked on them to its threads. What step05 wrote as a
// loop (wait, ready, register) happens inside Read, Write and Accept; what is left here is the
// application: the room's handlers, now called by many goroutines at once, under one mutex (room.go).
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	_ "embed"

	"golang.org/x/sys/unix"

	"muxlab/tracing"
	"muxlab/tracing/replay"
)

// shutdownGrace bounds how long a stopping server keeps sending what clients still have queued.
const shutdownGrace = 2 * time.Second

//go:embed scenarios/room.txt
var roomScenario string

//go:embed scenarios/echo-seed.txt
var echoScenario string

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "listen on this address (loopback by default)")
	trace := flag.Bool("trace", true, "write the trace to stdout")
	fds := flag.Bool("fds", false, "show fd numbers in the trace (they change from run to run)")
	echoing := flag.Bool("echo", false, "serve step03's echo instead of step04's chat room")
	sndbuf := flag.Int("sndbuf", 0, "if set, SO_SNDBUF for each client socket: small values show a slow reader sooner")
	maxLine := flag.Int("maxline", 1024, "chat: longest line a member may send, in bytes; longer ones are refused")
	maxQueue := flag.Int("maxqueue", 64<<10, "chat: a member whose socket is full with this many bytes still queued is too slow, and is put out")
	demo := flag.Bool("demo", false, "play three members chatting (with -echo: the seed's steps) against this program and show the trace")
	flag.Parse()
	if *demo {
		name, text := "scenarios/room.txt", roomScenario
		if *echoing {
			name, text = "scenarios/echo-seed.txt", echoScenario
		}
		os.Exit(replay.Demo(os.Stdout, "step10-goroutines", name, text, "-fds="+fmt.Sprint(*fds), "-echo="+fmt.Sprint(*echoing)))
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "step10-goroutines: unexpected argument %q: flags are written -name=value (see -h)\n", flag.Arg(0))
		os.Exit(2)
	}
	if *maxLine < 1 || *maxQueue < 1 || *sndbuf < 0 {
		fmt.Fprintf(os.Stderr, "step10-goroutines: want -maxline (%d) and -maxqueue (%d) of at least 1, and -sndbuf (%d) >= 0\n", *maxLine, *maxQueue, *sndbuf)
		os.Exit(2)
	}

	var tr *tracing.Recorder // nil: tracing off
	if *trace {
		tr = tracing.New(os.Stdout, *fds)
	}
	if _, err := netip.ParseAddrPort(*addr); err != nil { // an IP, so that a name cannot reach past loopback
		fmt.Fprintf(os.Stderr, "step10-goroutines: -addr %q: want IP:port, e.g. 127.0.0.1:8000\n", *addr)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "step10-goroutines: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "step10-goroutines: listening on %s (try: go run ./step04-chat/client -addr %s)\n", ln.Addr(), ln.Addr())
	tr.Listen(fdOf(ln.(*net.TCPListener)))
	var svc service = &room{maxLine: *maxLine, maxQueue: *maxQueue, tr: tr}
	if *echoing {
		svc = &echo{tr: tr}
	}
	serve(ln.(*net.TCPListener), *sndbuf, svc, tr)
}

// serve is all that is left of step05's loop: accept in a goroutine of its own, which starts each
// client's goroutines, and wait for a signal; then stop the service, give what is queued a grace to
// be sent, and return once every client's goroutines have ended. Nobody here waits for a socket: the
// runtime's netpoller does, for every goroutine parked in Accept, Read or Write.
func serve(ln *net.TCPListener, sndbuf int, svc service, tr *tracing.Recorder) {
	// Go delivers signals on a channel: no self-pipe, no fd to watch.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, unix.SIGINT, unix.SIGTERM)
	var clients sync.WaitGroup // every client's goroutines
	accepted := make(chan struct{})
	go func() {
		acceptAll(ln, sndbuf, svc, &clients)
		close(accepted)
	}()

	sig := <-signals
	svc.stop(sig.(syscall.Signal), func() {
		tr.Close(fdOf(ln), "shutdown") // before Close: the kernel may give the fd number to a client
		ln.Close()
	})
	grace := time.After(shutdownGrace)
	<-accepted // no client joins from now on: the wait group only counts down
	done := make(chan struct{})
	go func() {
		clients.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-grace:
		svc.closeAll() // whoever is left is not reading: close, and their goroutines end
		<-done
	}
}

// service is what the server serves: the room (room.go) or, with -echo, the echo (echo.go). Every
// method may be called by any goroutine; each service guards its own state and the trace.
type service interface {
	serve(c net.Conn, fd int, clients *sync.WaitGroup) // a client was accepted: start its goroutines
	refuse(c net.Conn, fd int)                         // out of fds: tell this client, and close it
	acceptError(fd int, err error)                     // accept failed (the trace says how)
	stop(sig syscall.Signal, closeListener func())     // a signal came: send what is queued, then close
	closeAll()                                         // the grace is over: close whoever is left
}

// fdOf returns the fd number under a socket of package net. The program never needs it to read or
// write: the trace names a client by it (c1, c2, and with -fds its number), as every other step's does.
func fdOf(s syscall.Conn) int {
	fd := -1
	if raw, err := s.SyscallConn(); err == nil {
		raw.Control(func(f uintptr) { fd = int(f) })
	}
	return fd
}
