//go:build unix

package exercises

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"muxlab/tracing/tracetest"
)

func TestMain(m *testing.M) { tracetest.Main(m) }

// Every exercise is solvable (its reference solution, applied to a copy of the step, produces the
// expected transcript) and not already solved (the shipped step does not). With -update, the expected
// transcript is regenerated from the solution.
func TestExercisesAreSolvableAndUnsolved(t *testing.T) {
	all, err := List("..")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) == 0 {
		t.Fatal("no exercises found")
	}
	for _, ex := range all {
		t.Run(ex.Name, func(t *testing.T) {
			// The copy lives in testdata/ inside the module, so that it builds against muxlab/tracing,
			// and go's ./... patterns skip it.
			work, err := os.MkdirTemp("testdata", "work-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(work) })
			copyDir(t, filepath.Join("..", ex.Step), filepath.Join(work, ex.Step))
			patch, err := filepath.Abs(filepath.Join(ex.Name, "solution", "solution.patch"))
			if err != nil {
				t.Fatal(err)
			}
			apply := exec.Command("git", "apply", "--directory="+filepath.ToSlash(work), "--unsafe-paths", patch)
			apply.Dir = "."
			if out, err := apply.CombinedOutput(); err != nil {
				t.Fatalf("the solution does not apply to %s: %v\n%s", ex.Step, err, out)
			}
			solved, diff, err := ex.Run("..", "./exercises/"+filepath.ToSlash(filepath.Join(work, ex.Step)))
			if err != nil {
				t.Fatal(err)
			}
			if *tracetest.Update {
				if err := os.WriteFile(filepath.Join(ex.Name, "expected.trace"), []byte(solved), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if diff != "" {
				t.Fatalf("the reference solution does not solve %s:\n%s", ex.Name, diff)
			}
			if _, diff, err := ex.Run("..", "./"+ex.Step); err != nil {
				t.Fatal(err)
			} else if diff == "" {
				t.Fatalf("the shipped %s already solves %s: the exercise asks for nothing", ex.Step, ex.Name)
			}
		})
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
