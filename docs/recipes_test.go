package docs

// The lessons' hands-on recipes, run as a student would run them. A recipe is the ```sh block after a
// line <!-- recipe NAME --> in a lesson: the test takes its commands from the page itself (so a
// recipe that stops working fails here, not in a classroom), runs them with the step built and on a
// free port, does what the lesson tells the student to do (type a line, press Ctrl-D or Ctrl-Z), and
// checks that the student sees what the lesson says. They need OpenBSD netcat (`nc`, package
// netcat-openbsd); .ci/run installs it.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"muxlab/tracing/tracetest"
)

// within bounds every wait of a recipe: what the lesson promises happens long before it.
const within = 10 * time.Second

var recipeRe = regexp.MustCompile(`^<!-- recipe (\S+) -->$`)

// recipe returns the commands of the recipe NAME in page: the lines of its sh block, comments and
// blank lines left out.
func recipe(t *testing.T, page, name string) []string {
	t.Helper()
	text, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(text), "\n")
	for i, l := range lines {
		if m := recipeRe.FindStringSubmatch(strings.TrimSpace(l)); m == nil || m[1] != name {
			continue
		}
		if i+1 >= len(lines) || strings.TrimSpace(lines[i+1]) != "```sh" {
			t.Fatalf("%s: recipe %s is not followed by a ```sh block", page, name)
		}
		var cmds []string
		for _, l := range lines[i+2:] {
			if strings.TrimSpace(l) == "```" {
				return cmds
			}
			cmd, _, _ := strings.Cut(l, "#")
			if cmd = strings.TrimSpace(cmd); cmd != "" {
				cmds = append(cmds, cmd)
			}
		}
		t.Fatalf("%s: recipe %s's block does not end", page, name)
	}
	t.Fatalf("%s has no <!-- recipe %s -->", page, name)
	return nil
}

// needNC skips the test where OpenBSD netcat is missing, except under CI, which must have it.
func needNC(t *testing.T) {
	t.Helper()
	out, _ := exec.Command("nc", "-h").CombinedOutput()
	if !bytes.Contains(out, []byte("OpenBSD netcat")) {
		if os.Getenv("CI") != "" {
			t.Fatalf("the recipes need OpenBSD netcat (apt-get install netcat-openbsd); nc -h says: %.80q", out)
		}
		t.Skip("the recipes need OpenBSD netcat (apt-get install netcat-openbsd)")
	}
}

// A process is one command of a recipe, in its own process group (Ctrl-Z stops a terminal's whole
// foreground job), with its stdin a pipe the test types into and its output collected.
type process struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	out   bytes.Buffer
	lines chan string // the output, line by line
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// start runs command (a shell command line from a recipe) in its own process group.
func start(t *testing.T, command string) *process {
	t.Helper()
	p := &process{cmd: exec.Command("sh", "-c", command), lines: make(chan string, 1024)}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // a chatty server: nobody waits for these lines
			}
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.cmd.Wait()
	})
	return p
}

// signal sends sig to the process's group, as a terminal does for Ctrl-Z (SIGSTOP stands for it:
// SIGTSTP may be caught) and Ctrl-C.
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		t.Fatal(err)
	}
}

// waitLine waits for an output line matching re, and returns it.
func (p *process) waitLine(t *testing.T, re string) string {
	t.Helper()
	want := regexp.MustCompile(re)
	deadline := time.After(within)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("%q ended before printing a line matching %q (stderr: %q)", p.cmd.Args[2], re, p.stderr())
			}
			if want.MatchString(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("%q printed no line matching %q within %v", p.cmd.Args[2], re, within)
		}
	}
}

// nothingFor checks that the process prints no line for d: the lesson's "nothing comes back".
func (p *process) nothingFor(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case l := <-p.lines:
		t.Fatalf("%q printed %q, where the lesson says nothing comes back", p.cmd.Args[2], l)
	case <-time.After(d):
	}
}

func (p *process) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// server starts a recipe's server command, built from the step it names, on a free loopback port,
// and returns it with the port its clients must use instead of the lesson's 8000.
func server(t *testing.T, command string) (*process, string) {
	t.Helper()
	m := regexp.MustCompile(`^go run \./(step\d\d-[a-z-]+)(.*)$`).FindStringSubmatch(command)
	if m == nil {
		t.Fatalf("%q: want a server started with go run ./stepNN-...", command)
	}
	bin := tracetest.Binary(t, "../"+m[1])
	p := start(t, bin+m[2]+" -addr 127.0.0.1:0")
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if m := regexp.MustCompile(`listening on 127\.0\.0\.1:(\d+)`).FindStringSubmatch(p.stderr()); m != nil {
			return p, m[1]
		}
		time.Sleep(10 * time.Millisecond) // polling the server's stderr: it says nothing else when ready
	}
	t.Fatalf("%q did not say where it listens: %q", command, p.stderr())
	return nil, ""
}

// client returns a recipe's client command, aimed at port instead of 8000.
func client(t *testing.T, command, port string) string {
	t.Helper()
	if !strings.Contains(command, "127.0.0.1 8000") {
		t.Fatalf("%q: want a client of 127.0.0.1 8000", command)
	}
	return strings.Replace(command, "127.0.0.1 8000", "127.0.0.1 "+port, 1)
}

// Lesson 01: the second client waits for the first, and Ctrl-D (nc -N: send FIN at the end of input)
// in the first client's terminal lets the server take the second.
func TestRecipe01_SecondClientWaits(t *testing.T) {
	needNC(t)
	cmds := recipe(t, "01-blocking.md", "second-client-waits")
	if len(cmds) != 3 {
		t.Fatalf("recipe has %d commands, want 3 (the server and two clients): %q", len(cmds), cmds)
	}
	_, port := server(t, cmds[0])
	first := start(t, client(t, cmds[1], port))
	fmt.Fprintln(first.stdin, "123")
	first.waitLine(t, `^123$`)
	second := start(t, client(t, cmds[2], port))
	fmt.Fprintln(second.stdin, "345")
	second.nothingFor(t, 300*time.Millisecond)
	first.stdin.Close() // Ctrl-D in the first client's terminal
	second.waitLine(t, `^345$`)
}

// Lesson 02: an endless sender that is suspended (Ctrl-Z) stops reading its echo; the server, blocked
// in write, answers nobody until it is resumed or killed (B3).
func TestRecipe02_SuspendedSenderStallsEveryone(t *testing.T) {
	needNC(t)
	cmds := recipe(t, "02-select-echo.md", "stall")
	if len(cmds) != 3 {
		t.Fatalf("recipe has %d commands, want 3 (the server, the endless sender, a second client): %q", len(cmds), cmds)
	}
	srv, port := server(t, cmds[0])
	sender := start(t, client(t, cmds[1], port))
	// Let the sender get well ahead of the echo before the suspend, as a second of waiting does: the
	// server must have more to echo than the sockets' buffers hold once the sender stops reading.
	for read := 0; read < 256<<10; {
		n, _ := strconv.Atoi(regexp.MustCompile(`(\d+) bytes`).FindStringSubmatch(srv.waitLine(t, `^read +c1 \d+ bytes`))[1])
		read += n
	}
	sender.signal(t, syscall.SIGSTOP) // Ctrl-Z
	second := start(t, client(t, cmds[2], port))
	second.nothingFor(t, 500*time.Millisecond)
	sender.signal(t, syscall.SIGKILL) // the lesson's "then kill it (kill %1)"
	second.waitLine(t, `^hello$`)
}
