package agent

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Lines come out the same however the bytes arrive: the live follower
// and a restarted agent must agree on every line's index.
func TestLineCutterIsIndependentOfWriteSizes(t *testing.T) {
	long := strings.Repeat("x", 2*maxLineBytes+7)
	exact := strings.Repeat("y", maxLineBytes)
	input := "a\r\nb\n\n" + long + "\n" + exact + "\nlast-without-newline"
	var whole []string
	c := lineCutter{emit: func(b []byte) { whole = append(whole, string(b)) }}
	c.write([]byte(input))
	c.end()
	want := []string{"a", "b", "", long[:maxLineBytes], long[maxLineBytes : 2*maxLineBytes], long[2*maxLineBytes:], exact, "last-without-newline"}
	if fmt.Sprint(whole) != fmt.Sprint(want) {
		t.Fatalf("lines %q", whole)
	}
	for seed := range 20 {
		r := rand.New(rand.NewSource(int64(seed)))
		var got []string
		c := lineCutter{emit: func(b []byte) { got = append(got, string(b)) }}
		for b := []byte(input); len(b) > 0; {
			n := min(len(b), 1+r.Intn(9000))
			c.write(b[:n])
			b = b[n:]
		}
		c.end()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("seed %d: %d lines differ from whole-input cutting", seed, len(got))
		}
	}
}

// follow sees lines written while it waits, a last line without a newline,
// and stops once the writer has exited and everything is read.
func TestFollowReadsEverythingWrittenBeforeExit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.out")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var got []string
	done := make(chan error)
	sw := watchSpool(filepath.Dir(path))
	defer sw.close()
	go func() { done <- follow(sw, path, exited, func(b []byte) { got = append(got, string(b)) }) }()
	// the writer pauses on purpose, so that follow reaches the end of the
	// file and waits for more, as it does behind a live script
	for i := range 1000 {
		fmt.Fprintf(f, "line %d\n", i)
		if i%100 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	fmt.Fprint(f, "part")
	time.Sleep(20 * time.Millisecond) // likewise: follow may read "part" before "ial" comes
	fmt.Fprint(f, "ial")
	f.Close()
	close(exited)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 1001 || got[999] != "line 999" || got[1000] != "partial" {
		t.Fatalf("%d lines, last %q", len(got), got[len(got)-1])
	}
}

// killWriters finds a process by the spool file it holds open, even one
// in a process group the journal never recorded, and kills it.
func TestKillWritersKillsWhoeverHoldsTheSpool(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.out")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.Stdout = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	other := exec.Command("sleep", "60") // holds no spool: left alone
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer other.Process.Kill()
	killWriters(map[string]bool{path: true})
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("the writer: %v, want killed", err)
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("a process without the spool open was touched: %v", err)
	}
}
