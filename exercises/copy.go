package exercises

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// CopyDir copies the folder from, with its subfolders, to to. Only folders and regular files are
// copied: a symlink in a student's folder could point anywhere on the machine.
func CopyDir(from, to string) error {
	return filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o644)
	})
}

// ApplyPatch applies a patch made by git diff to the files under dir, which its paths are relative to
// (a/step03-write-queues/echo.go is dir/step03-write-queues/echo.go).
func ApplyPatch(dir, patch string) error {
	abs, err := filepath.Abs(patch)
	if err != nil {
		return err
	}
	apply := exec.Command("git", "apply", abs)
	apply.Dir = dir
	if out, err := apply.CombinedOutput(); err != nil {
		return fmt.Errorf("git apply %s in %s: %v\n%s", patch, dir, err, out)
	}
	return nil
}
