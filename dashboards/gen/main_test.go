package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestRunWritesTheCommittedFiles runs the generator as go generate does,
// into a temporary directory, and compares with the committed JSON.
func TestRunWritesTheCommittedFiles(t *testing.T) {
	dir := t.TempDir()
	if err := run(dir); err != nil {
		t.Fatal(err)
	}
	written, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 3 {
		t.Fatalf("generator wrote %d files, want 3", len(written))
	}
	for _, path := range written {
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join("..", filepath.Base(path)))
		if err != nil {
			t.Fatalf("generated %s is not committed: %v", filepath.Base(path), err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the committed file; run go generate ./dashboards/...", filepath.Base(path))
		}
	}
}

func TestRunFailsOnAMissingDirectory(t *testing.T) {
	if err := run(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("run wrote into a directory that does not exist")
	}
}
