//go:build linux

package grade

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Bounds on a zip: a submission is one step folder or one clone of the lab, a few hundred kilobytes.
const (
	maxZipBytes = 64 << 20 // unpacked, all files together
	maxZipFiles = 5000
)

// A submission, once found: where its step is, and how the grader took it.
type submission struct {
	Name  string // the student: the entry's name, without .zip
	Took  string // "clone", "step folder", "zip: clone" or "zip: step folder"
	Root  string // a clone's module root ("" for a step folder)
	Step  string // the step's folder
	Wrong string // why it cannot be graded ("" if it can)
}

// find works out what the folder dir holds: a clone of the lab (a go.mod, and the step's folder
// beside it), or a step folder (Go files). A zip often wraps either in one folder, which is
// looked through.
func find(name, dir, step string) submission {
	s := submission{Name: name}
	for range 3 {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			s.Took, s.Root, s.Step = "clone", dir, filepath.Join(dir, step)
			if fi, err := os.Stat(s.Step); err != nil || !fi.IsDir() {
				s.Wrong = "a clone without " + step + "/"
			}
			return s
		}
		if gofiles, _ := filepath.Glob(filepath.Join(dir, "*.go")); len(gofiles) > 0 {
			s.Took, s.Step = "step folder", dir
			return s
		}
		entries, _ := os.ReadDir(dir)
		var dirs []string
		for _, e := range entries {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") && e.Name() != "__MACOSX" {
				dirs = append(dirs, e.Name())
			}
		}
		if len(dirs) != 1 {
			break
		}
		dir = filepath.Join(dir, dirs[0])
	}
	s.Wrong = "neither a clone of the lab (go.mod) nor a step folder (*.go)"
	return s
}

// unzip unpacks the archive into dir, refusing what could write outside it (absolute paths, "..",
// links) and stopping past maxZipBytes or maxZipFiles.
func unzip(archive, dir string) error {
	r, err := zip.OpenReader(archive)
	if err != nil {
		return err
	}
	defer r.Close()
	if len(r.File) > maxZipFiles {
		return fmt.Errorf("%d files: more than %d", len(r.File), maxZipFiles)
	}
	var total int64
	for _, f := range r.File {
		name := filepath.FromSlash(f.Name)
		if !filepath.IsLocal(name) || strings.Contains(f.Name, `\`) {
			return fmt.Errorf("%q: a path outside the archive's folder", f.Name)
		}
		path := filepath.Join(dir, name)
		mode := f.Mode()
		switch {
		case mode.IsDir():
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
			continue
		case !mode.IsRegular():
			return fmt.Errorf("%q: not a regular file (%v)", f.Name, mode.Type())
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		n, err := unpack(f, path, maxZipBytes-total)
		total += n
		if err != nil {
			return err
		}
	}
	return nil
}

var errTooBig = fmt.Errorf("more than %d MiB unpacked", maxZipBytes>>20)

// unpack writes one file of the archive to path, at most limit bytes of it: the sizes a zip declares
// are not to be trusted.
func unpack(f *zip.File, path string, limit int64) (int64, error) {
	in, err := f.Open()
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, io.LimitReader(in, limit+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > limit {
		err = errTooBig
	}
	if errors.Is(err, zip.ErrChecksum) || errors.Is(err, zip.ErrFormat) {
		err = fmt.Errorf("%s: %w", f.Name, err)
	}
	return n, err
}
