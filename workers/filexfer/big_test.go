package filexfer

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBigFile sends a file far larger than a NATS message (200 MB, or
// FLEETJOB_FILEXFER_BIG_MB) once and fetches it to three destinations,
// checking content and that memory stays bounded: nothing holds the file.
// The server runs in a child process and the test is not parallel, so the
// heap it samples is the transfers' own.
func TestBigFile(t *testing.T) {
	if testing.Short() {
		t.Skip("moves hundreds of MB")
	}
	sizeMB := 200
	if v := os.Getenv("FLEETJOB_FILEXFER_BIG_MB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("FLEETJOB_FILEXFER_BIG_MB=%q", v)
		}
		sizeMB = n
	}
	size := int64(sizeMB) << 20
	url, user := newStoreProcess(t)
	obs := connectStore(t, url, user)
	src := filepath.Join(t.TempDir(), "big.bin")
	wantSum := writeRandom(t, src, size)

	runtime.GC()
	baseInuse, baseLive := heapNow()
	var peakInuse, peakLive atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			inuse, live := heapNow()
			peakInuse.Store(max(peakInuse.Load(), inuse))
			peakLive.Store(max(peakLive.Load(), live))
		}
	})
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt()

	var rec recorder
	start := time.Now()
	entries, err := Upload(t.Context(), obs, "job/9", srcHost, []string{src}, 0, rec.add)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	t.Logf("upload of %d MB: %v", sizeMB, time.Since(start))
	if entries[0].SHA256 != wantSum || entries[0].Size != size {
		t.Fatalf("entry %+v, want size %d sha %s", entries[0], size, wantSum)
	}
	for i := range 3 {
		dest := t.TempDir()
		start := time.Now()
		if err := Download(t.Context(), obs, entries, dest, destHost, nil, "", 0, rec.add); err != nil {
			t.Fatalf("Download %d: %v", i, err)
		}
		t.Logf("download %d: %v", i, time.Since(start))
		p := filepath.Join(dest, "big.bin")
		if got := fileSum(t, p); got != wantSum {
			t.Errorf("download %d: sha256 %s, want %s", i, got, wantSum)
		}
		if err := os.Remove(p); err != nil { // spare the disk
			t.Fatal(err)
		}
	}
	halt()

	// Live heap is what the transfers hold: a download may buffer up to the
	// server's flow-control window (32 MB for a push consumer), never the
	// file. Heap in use adds garbage not yet collected (up to about as much
	// again), so it gets the looser bound.
	liveGrowth := int64(peakLive.Load()) - int64(baseLive)
	inuseGrowth := int64(peakInuse.Load()) - int64(baseInuse)
	t.Logf("heap growth moving %s: live %s, in use %s", FormatBytes(size), FormatBytes(liveGrowth), FormatBytes(inuseGrowth))
	if limit := min(int64(64<<20), size/2); liveGrowth > limit {
		t.Errorf("live heap grew by %s, want under %s", FormatBytes(liveGrowth), FormatBytes(limit))
	}
	if limit := size / 2; inuseGrowth > limit {
		t.Errorf("heap in use grew by %s, want under %s", FormatBytes(inuseGrowth), FormatBytes(limit))
	}
	var ticks int
	for _, l := range rec.all() {
		if l.Progress > 0 && l.Progress < 100 {
			ticks++
		}
	}
	if ticks == 0 {
		t.Error("no progress records between 0 and 100%")
	}
}

// heapNow returns the heap in use and the live heap as of the last GC.
func heapNow() (inuse, live uint64) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return ms.HeapInuse, s[0].Value.Uint64()
}

// writeRandom writes size deterministic pseudo-random bytes in 1 MB pieces
// and returns their hex SHA-256.
func writeRandom(t testing.TB, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gen := rand.NewChaCha8([32]byte{'f', 'l', 'e', 'e', 't'})
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		chunk := buf[:min(int64(len(buf)), left)]
		_, _ = gen.Read(chunk)
		h.Write(chunk)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fileSum(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
