package main

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// A client is one member's connection, read line by line.
type client struct {
	t    *testing.T
	conn net.Conn
	in   *bufio.Reader
}

func start(t *testing.T, maxQueue int) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go (&room{maxLine: 1024, maxQueue: maxQueue}).run(ln)
	return ln.Addr().String()
}

func join(t *testing.T, addr, welcome string) *client {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t, c, bufio.NewReader(c)}
	cl.expect("* welcome, " + welcome + "; " + help)
	return cl
}

func (c *client) send(line string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(line + "\n")); err != nil {
		c.t.Fatal(err)
	}
}

// expect reads the next line, waiting at most 5 s, and fails unless it is want.
func (c *client) expect(want string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := c.in.ReadString('\n')
	if err != nil || got != want+"\n" {
		c.t.Fatalf("got %q (%v), want %q", got, err, want)
	}
}

// The wire protocol of step04, which the bench relies on: names, notices, lines to the others only,
// commands, refused long lines, cleaned text, one leave notice.
func TestRoomSpeaksStep04Protocol(t *testing.T) {
	addr := start(t, 64<<10)
	a := join(t, addr, "guest1")
	b := join(t, addr, "guest2")
	a.expect("* guest2 joined")

	b.send("hi")
	a.expect("guest2: hi")
	a.send("/nick alice")
	a.expect("* you are now alice")
	b.expect("* guest1 is now alice") // b's next line: its own "hi" never came back to it
	b.send("/nick ALICE")
	b.expect("* the name ALICE is taken")
	b.send("/who")
	b.expect("* in the room: alice, guest2")
	a.send("/msg guest2 psst")
	b.expect("alice (private): psst")
	a.send(strings.Repeat("x", 1025))
	a.expect("* line too long (over 1024 bytes): not sent")
	a.send("/dance")
	a.expect("* unknown command /dance; " + help)
	a.send("clear\x1b[2J screen\r")
	b.expect("alice: clear[2J screen")
	a.send("/quit")
	a.expect("* bye")
	b.expect("* alice left")
	if _, err := a.in.ReadString('\n'); err == nil {
		t.Error("after /quit the connection stays open")
	}
}

// B13: a member who stops reading is put out once its queue reaches the limit; the room goes on.
func TestSlowMemberIsPutOut(t *testing.T) {
	addr := start(t, 4096)
	talker := join(t, addr, "guest1")
	join(t, addr, "guest2") // never reads again
	talker.expect("* guest2 joined")

	// Talk until the notice comes: first the kernel's buffers fill, then guest2's queue. Bounded at
	// 64 MiB, far more than loopback buffers hold.
	notice := make(chan string, 1)
	go func() {
		talker.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, _ := talker.in.ReadString('\n')
		notice <- line
	}()
	chunk := []byte(strings.Repeat("la la la la la la la la la la la la la\n", 1000))
	for sent := 0; sent < 64<<20; sent += len(chunk) {
		select {
		case line := <-notice:
			if line != "* guest2 was put out: too slow to read\n" {
				t.Fatalf("talker got %q", line)
			}
			talker.send("/who")
			talker.expect("* in the room: guest1")
			return
		default:
		}
		if _, err := talker.conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("64 MiB later, the slow member is still in the room")
}
