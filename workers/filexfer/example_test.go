package filexfer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/filexfer"
)

func ExampleResolve() {
	dir, _ := os.MkdirTemp("", "filexfer-example")
	defer os.RemoveAll(dir)
	for _, name := range []string{"app.log", "app.log.1", "conf/app.yaml"} {
		_ = os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		_ = os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644)
	}

	files, missing, err := filexfer.Resolve([]string{
		dir + "/*.log",
		`REGEX:` + dir + `/conf/.*\.yaml`,
		dir + "/absent.txt",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range files {
		fmt.Println("file", strings.TrimPrefix(f, dir))
	}
	for _, m := range missing {
		fmt.Println("missing", strings.TrimPrefix(m, dir))
	}
	// Output:
	// file /app.log
	// file /conf/app.yaml
	// missing /absent.txt
}

// A file step: the source agent uploads once, every target downloads.
func ExampleUpload() {
	ctx := context.Background()
	var obs jetstream.ObjectStore // js.ObjectStore(ctx, schemas.BucketArtifacts)
	src := schemas.Host{IP: "10.0.0.7"}
	logf := func(l schemas.FileLog) { fmt.Println(l.Status, l.Content) }

	files, missing, err := filexfer.Resolve([]string{"/etc/app/*.conf"})
	if err != nil || len(missing) > 0 {
		return // strict steps fail here
	}
	entries, err := filexfer.Upload(ctx, obs, "job/12/0/"+src.String(), src, files, 10<<20, logf)
	if err != nil {
		return
	}
	if err := filexfer.CheckNames(entries); err != nil {
		return
	}
	// On each target:
	mode := uint32(0o640)
	_ = filexfer.Download(ctx, obs, entries, "/opt/app/conf", schemas.Host{IP: "10.0.0.8"}, &mode, "", 0, logf)
}
