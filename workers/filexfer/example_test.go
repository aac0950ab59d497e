package filexfer_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleetjob/fleetjob/internal/natsrv"
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

// A file step: the source agent uploads once into the artifacts object
// store, every target downloads. Progress records go to a callback; this
// one prints the final record of each file.
func ExampleUpload() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "filexfer-example")
	defer os.RemoveAll(dir)
	srv, user, err := natsrv.StartEphemeral(natsrv.Config{Addr: "127.0.0.1:-1", StoreDir: filepath.Join(dir, "nats")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()
	nc, _ := nats.Connect(srv.ClientURL(), user.Option())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	_ = schemas.DefaultTopology().Ensure(ctx, js)
	obs, _ := js.ObjectStore(ctx, schemas.BucketArtifacts)

	src := schemas.Host{IP: "10.0.0.7"}
	_ = os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "etc", "app.conf"), []byte("port = 80\n"), 0o644)
	logf := func(l schemas.FileLog) {
		if l.Status == schemas.FileSuccess || l.Status == schemas.FileFailed {
			fmt.Println(map[int]string{schemas.FileModeUpload: "upload", schemas.FileModeDownload: "download"}[l.Mode],
				filepath.Base(l.SourcePath), l.Status == schemas.FileSuccess, l.Size, "bytes")
		}
	}

	files, missing, err := filexfer.Resolve([]string{dir + "/etc/*.conf"})
	if err != nil || len(missing) > 0 {
		fmt.Println("missing", missing, err) // strict steps fail here
		return
	}
	entries, err := filexfer.Upload(ctx, obs, "job/12/0/"+src.String(), src, files, 10<<20, logf)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := filexfer.CheckNames(entries); err != nil {
		fmt.Println(err)
		return
	}
	// On each target:
	mode := uint32(0o640)
	dest := filepath.Join(dir, "opt", "app", "conf")
	if err := filexfer.Download(ctx, obs, entries, dest, schemas.Host{IP: "10.0.0.8"}, &mode, "", 0, logf); err != nil {
		fmt.Println(err)
		return
	}
	b, _ := os.ReadFile(filepath.Join(dest, "app.conf"))
	fi, _ := os.Stat(filepath.Join(dest, "app.conf"))
	fmt.Printf("%s %q\n", fi.Mode(), b)
	// Output:
	// upload app.conf true 10 bytes
	// download app.conf true 10 bytes
	// -rw-r----- "port = 80\n"
}
