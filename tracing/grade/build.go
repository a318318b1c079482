//go:build linux

package grade

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"muxlab/exercises"
)

var errBuildTimeout = errors.New("go build did not finish within the build limit")

// maxBuildLog bounds what the grader keeps of go build's output: a program can make the compiler
// print a lot.
const maxBuildLog = 16 << 10

// build compiles the submission's step and returns the binary, or go build's output. A clone is built
// in its own module; a bare step folder is copied into this module, so that its muxlab/tracing imports
// resolve. The build may not fetch anything (GOPROXY=off) or switch toolchains, and is stopped, with
// every process it started, at the build limit.
func (g *grader) build(ctx context.Context, s submission) (bin, log string, err error) {
	bin = filepath.Join(g.tmp, "bin", s.Name)
	root, pkg := s.Root, "./"+g.step
	if root == "" {
		copied := filepath.Join(g.inModule, s.Name, g.step)
		if err := exercises.CopyDir(s.Step, copied); err != nil {
			return "", err.Error(), err
		}
		rel, _ := filepath.Rel(g.o.Root, copied)
		root, pkg = g.o.Root, "./"+filepath.ToSlash(rel)
	}
	ctx, cancel := context.WithTimeout(ctx, g.o.BuildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOTOOLCHAIN=local", "GOWORK=off", "GOFLAGS=-mod=readonly")
	out := &capped{max: maxBuildLog}
	cmd.Stdout, cmd.Stderr = out, out
	// The compiler runs as go's children: stop the whole process group, not only go.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("%w (%v)", errBuildTimeout, g.o.BuildTimeout)
	}
	return bin, out.String(), err
}

// capped keeps the first max bytes written to it, and counts the rest.
type capped struct {
	mu      sync.Mutex
	max     int
	b       []byte
	dropped int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(len(p), c.max-len(c.b))
	c.b = append(c.b, p[:n]...)
	c.dropped += len(p) - n
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped > 0 {
		return fmt.Sprintf("%s\n... %d more bytes cut ...\n", c.b, c.dropped)
	}
	return string(c.b)
}
