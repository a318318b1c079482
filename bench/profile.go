//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

// With -cpuprofile DIR, every server is built with one more file in its package, profileSource (added
// by go build -overlay, so no step's source changes), and writes a CPU profile of each run to DIR,
// and a heap profile of what was live when the run ended beside it (.pprof.heap): that is how to
// find out why a server misses a target. Read them with go tool pprof, e.g.
//
//	go tool pprof -top DIR/step05-epoll-LT-echo-*.pprof
//	go tool pprof -top -sample_index=inuse_space DIR/step05-epoll-LT-scan-*.pprof.heap
//
// Profiling costs the servers CPU time (the profiler's SIGPROF), so a profiled run's figures are not
// the ones to publish, and no report is written unless -out asks for one.
var profiling struct {
	dir      string // where profiles go; empty: not profiling
	workload string // part of each profile's name: echo, scan, chat, tracing
	n        int    // runs so far, to number the files
}

const profileEnv = "MUXLAB_BENCH_CPUPROFILE"

const profileSource = `package main

// Added by the bench (bench/profile.go) when it runs with -cpuprofile; not part of the step.

import (
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func init() {
	path := os.Getenv("` + profileEnv + `")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		os.Stderr.WriteString("bench profile: " + err.Error() + "\n")
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		os.Stderr.WriteString("bench profile: " + err.Error() + "\n")
		return
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGUSR2) // not SIGTERM or SIGINT, which a step may handle itself
	go func() {
		<-stop
		pprof.StopCPUProfile()
		f.Close()
		if h, err := os.Create(path + ".heap"); err == nil {
			pprof.Lookup("heap").WriteTo(h, 0) // what is live at the end, and where it was allocated
			h.Close()
		}
		os.Exit(0)
	}()
}
`

// profileOverlay writes profileSource once into dir and returns the overlay that adds it to each of
// pkgs.
func profileOverlay(root, dir string, pkgs []string) (map[string]string, error) {
	src := filepath.Join(dir, "zz_bench_profile.go")
	if err := os.WriteFile(src, []byte(profileSource), 0o644); err != nil {
		return nil, err
	}
	replace := map[string]string{}
	for _, p := range pkgs {
		replace[filepath.Join(root, p, "zz_bench_profile.go")] = src
	}
	return replace, nil
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9]+`)

// profileEnvFor is the environment entry that makes the next server started profile itself, or "".
func profileEnvFor(server string) string {
	if profiling.dir == "" {
		return ""
	}
	profiling.n++
	name := fmt.Sprintf("%s-%s-%03d.pprof", unsafeName.ReplaceAllString(server, "-"), profiling.workload, profiling.n)
	return profileEnv + "=" + filepath.Join(profiling.dir, name)
}

// stopProfiled asks a profiling server to write its profile and exit; it reports whether it did
// within a few seconds.
func (c *child) stopProfiled() bool {
	c.cmd.Process.Signal(syscall.SIGUSR2)
	select {
	case <-c.done:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}
