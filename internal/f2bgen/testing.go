package f2bgen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// generatorVersion changes whenever generated content changes, so cached
// files of an older generator are not reused.
const generatorVersion = 1

// CacheDir is where CachedPathT and GenerateT keep generated databases:
// $BANGUI_F2BGEN_CACHE, or bangui-f2bgen-cache in the system temp directory.
func CacheDir() string {
	if d := os.Getenv("BANGUI_F2BGEN_CACHE"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "bangui-f2bgen-cache")
}

// CacheKey names the cached file of spec: equal for specs that generate the
// same database.
func CacheKey(spec Spec) (string, error) {
	spec, err := spec.withDefaults()
	if err != nil {
		return "", err
	}
	canonical, err := json.Marshal(struct {
		Version int
		Spec    Spec
		Now     int64
	}{generatorVersion, spec, spec.Now.Unix()})
	if err != nil {
		return "", fmt.Errorf("f2bgen: cache key: %w", err)
	}
	sum := sha256.Sum256(canonical)
	return fmt.Sprintf("f2b-v%d-%d-rows-%s.sqlite3", spec.Schema, spec.Rows, hex.EncodeToString(sum[:8])), nil
}

// Cached returns the path of spec's database in dir, generating it first
// when it is not there yet. Concurrent callers (parallel test binaries) may
// both generate it; the rename into place is atomic and the content equal.
func Cached(ctx context.Context, dir string, spec Spec) (string, error) {
	key, err := CacheKey(spec)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, key)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("f2bgen: cache dir: %w", err)
	}
	tmpDir, err := os.MkdirTemp(dir, ".gen-")
	if err != nil {
		return "", fmt.Errorf("f2bgen: cache dir: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmpDir) }()
	tmp := filepath.Join(tmpDir, key)
	if raceEnabled && spec.Rows >= outOfProcessRows {
		err = generateOutOfProcess(ctx, tmp, spec)
	} else {
		_, err = Generate(ctx, tmp, spec)
	}
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("f2bgen: cache: %w", err)
	}
	return path, nil
}

// outOfProcessRows is the size from which a race-instrumented test binary
// generates through the f2bgen command built without the race detector.
const outOfProcessRows = 20_000

// generateOutOfProcess runs the f2bgen command (go run, without -race) on
// spec; the file is the same as Generate's, as generation is deterministic.
func generateOutOfProcess(ctx context.Context, path string, spec Spec) error {
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("f2bgen: encode spec: %w", err)
	}
	specFile := path + ".spec.json"
	if err := os.WriteFile(specFile, specJSON, 0o600); err != nil {
		return fmt.Errorf("f2bgen: %w", err)
	}
	defer func() { _ = os.Remove(specFile) }()
	cmd := exec.CommandContext(ctx, "go", "run", "github.com/bangui/bangui_exporter/internal/f2bgen/cmd/f2bgen",
		"-spec", specFile, "-out", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("f2bgen: generate out of process: %w\n%s", err, out)
	}
	return nil
}

// CachedPathT returns the path of spec's database in CacheDir, generating it
// once. The file is shared between tests and runs: open it read-only and
// never change it (use GenerateT for a private copy).
func CachedPathT(tb testing.TB, spec Spec) string {
	tb.Helper()
	path, err := Cached(context.Background(), CacheDir(), spec)
	if err != nil {
		tb.Fatalf("f2bgen: %v", err)
	}
	return path
}

// GenerateT returns the path of a private copy of spec's database in
// tb.TempDir(), built once per spec and cached in CacheDir. The test may
// change the copy freely.
func GenerateT(tb testing.TB, spec Spec) string {
	tb.Helper()
	src := CachedPathT(tb, spec)
	dst := filepath.Join(tb.TempDir(), "fail2ban.sqlite3")
	if err := CopyFile(dst, src); err != nil {
		tb.Fatalf("f2bgen: %v", err)
	}
	return dst
}

// CopyFile copies a database file to dst (which must not exist), mode 0600
// like fail2ban's.
func CopyFile(dst, src string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy database: %w", err)
	}
	defer func() { _ = in.Close() }()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy database: %w", err)
	}
	defer func() {
		if cerr := out.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("copy database: %w", cerr)
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return errors.Join(fmt.Errorf("copy database: %w", err), os.Remove(dst))
	}
	return nil
}
