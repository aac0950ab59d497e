package schemas

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
)

// StepFile is the type of a file-distribution step.
const StepFile = "file"

// FileSpec is the body of a file step: files from source hosts (or from the
// artifact store) copied into one directory on every target.
type FileSpec struct {
	Sources []FileSource `json:"sources"`
	// Destination is an absolute directory on the targets; files land in it
	// under their base names and never outside it.
	Destination string `json:"destination"`
	// Mode is an octal permission string ("0644"); empty keeps the source's.
	Mode string `json:"mode,omitempty"`
	// Owner is the destination account: the alias the client named, which
	// the API resolves to an OS user stored here. Targets create the
	// destination directory and write the files as that user (empty: as
	// the agent itself, which only jobs that did not pass the API can have).
	Owner string `json:"owner,omitempty"`
	// OwnerAlias is the alias the client named for Owner, kept for display.
	OwnerAlias string `json:"owner_alias,omitempty"`
	// DownloadLimitMB and UploadLimitMB cap each agent's transfer speed in
	// MB/s; 0 means no limit.
	DownloadLimitMB int `json:"download_limit_mb,omitempty"`
	UploadLimitMB   int `json:"upload_limit_mb,omitempty"`
	// Strict (the default) fails the step when a source file is missing;
	// otherwise the files that exist are sent.
	Strict *bool `json:"strict,omitempty"`
	// DestMustExist fails a target whose destination directory does not
	// exist, instead of creating it (BlueKing's strict transfer mode).
	DestMustExist bool `json:"dest_must_exist,omitempty"`
}

// FileSource is a set of files on some hosts, or one artifact.
type FileSource struct {
	// Hosts hold the files at Paths: absolute paths, globs, or "REGEX:"
	// followed by a regular expression matched against absolute paths.
	Hosts []Host   `json:"hosts,omitempty"`
	Paths []string `json:"paths,omitempty"`
	// Artifact names an object already in the artifacts store.
	Artifact string `json:"artifact,omitempty"`
	// Account reads the files as this account on the source hosts: the
	// alias the client named, resolved by the API to an OS user.
	Account string `json:"account,omitempty"`
	// AccountAlias is the alias the client named for Account, for display.
	AccountAlias string `json:"account_alias,omitempty"`
}

// FileEntry is one file that travels through the artifacts store.
type FileEntry struct {
	SourceHost Host   `json:"source_host"`
	SourcePath string `json:"source_path"`
	// Object is its name in the artifacts bucket.
	Object string `json:"object"`
	// Name is the file name it gets under the destination directory.
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
	Mode   uint32 `json:"mode"`   // permission bits of the source
}

// FileLog is one file's transfer record on one host, in BlueKing's terms:
// mode 0 upload, 1 download; status 1 waiting, 2 uploading, 3 downloading,
// 4 success, 5 failed.
type FileLog struct {
	Mode       int    `json:"mode"`
	SourceHost Host   `json:"source_host"`
	SourcePath string `json:"source_path"`
	DestHost   Host   `json:"dest_host,omitzero"`
	DestPath   string `json:"dest_path,omitempty"`
	Status     int    `json:"status"`
	Size       int64  `json:"size"`
	// Speed is in bytes per second; Progress in percent.
	Speed    int64  `json:"speed"`
	Progress int    `json:"progress"`
	Content  string `json:"content"`
}

// File transfer modes and statuses (BlueKing's codes).
const (
	FileModeUpload   = 0
	FileModeDownload = 1

	FileWaiting     = 1
	FileUploading   = 2
	FileDownloading = 3
	FileSuccess     = 4
	FileFailed      = 5
)

// IsStrict reports whether a missing source file fails the step.
func (f *FileSpec) IsStrict() bool { return f.Strict == nil || *f.Strict }

// FileMode parses Mode; ok is false when Mode is empty.
func (f *FileSpec) FileMode() (mode uint32, ok bool) {
	if f.Mode == "" {
		return 0, false
	}
	v, err := strconv.ParseUint(f.Mode, 8, 32)
	if err != nil {
		return 0, false
	}
	return uint32(v), true
}

var artifactName = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,255}$`)

func (f *FileSpec) validate(p string, fe *FieldErrors) {
	if len(f.Sources) == 0 {
		fe.Add(p+".sources", "at least one source is required")
	}
	for i := range f.Sources {
		src := &f.Sources[i]
		sp := fmt.Sprintf("%s.sources[%d]", p, i)
		switch {
		case src.Artifact != "" && (len(src.Hosts) > 0 || len(src.Paths) > 0):
			fe.Add(sp, "a source has either artifact or hosts and paths, not both")
		case src.Artifact != "":
			if !artifactName.MatchString(src.Artifact) || strings.Contains(src.Artifact, "..") {
				fe.Add(sp+".artifact", "%q is not a valid artifact name", src.Artifact)
			}
		default:
			if len(src.Hosts) == 0 {
				fe.Add(sp+".hosts", "at least one source host is required")
			}
			for j := range src.Hosts {
				src.Hosts[j].validate(fmt.Sprintf("%s.hosts[%d]", sp, j), fe)
			}
			src.Hosts = dedupeHosts(src.Hosts)
			if len(src.Paths) == 0 {
				fe.Add(sp+".paths", "at least one path is required")
			}
			for j, pth := range src.Paths {
				if err := validSourcePath(pth); err != nil {
					fe.Add(fmt.Sprintf("%s.paths[%d]", sp, j), "%v", err)
				}
			}
		}
		if src.Account != "" && !accountName.MatchString(src.Account) {
			fe.Add(sp+".account", "%q is not a valid account name", src.Account)
		}
	}
	if clean := path.Clean(f.Destination); !path.IsAbs(f.Destination) || (f.Destination != clean && f.Destination != clean+"/") {
		fe.Add(p+".destination", "%q must be a clean absolute directory", f.Destination)
	}
	if f.Mode != "" {
		if m, ok := f.FileMode(); !ok || m > 0o7777 {
			fe.Add(p+".mode", "%q is not an octal permission like 0644", f.Mode)
		}
	}
	if f.Owner != "" && !accountName.MatchString(f.Owner) {
		fe.Add(p+".owner", "%q is not a valid account name", f.Owner)
	}
	if f.DownloadLimitMB < 0 {
		fe.Add(p+".download_limit_mb", "must not be negative, got %d", f.DownloadLimitMB)
	}
	if f.UploadLimitMB < 0 {
		fe.Add(p+".upload_limit_mb", "must not be negative, got %d", f.UploadLimitMB)
	}
}

// validSourcePath accepts an absolute path or glob, or "REGEX:<expr>".
func validSourcePath(p string) error {
	if re, ok := strings.CutPrefix(p, "REGEX:"); ok {
		if _, err := regexp.Compile(re); err != nil {
			var se *syntax.Error
			if errors.As(err, &se) {
				return fmt.Errorf("%q: bad regular expression: %s", p, se.Code)
			}
			return fmt.Errorf("%q: bad regular expression", p)
		}
		return nil
	}
	if !path.IsAbs(p) {
		return fmt.Errorf("%q is not an absolute path", p)
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("%q: bad glob pattern", p)
	}
	return nil
}

// UploadUnit is one source host of a file step: it uploads one source's
// paths.
type UploadUnit struct {
	Source int  `json:"source"`
	Host   Host `json:"host"`
}

// UploadPrefix starts the names of the objects upload unit unit of a
// file step stores: "job/<id>/<step>/u<unit>". The artifact relay lets that
// unit's agent write under it and nowhere else.
func UploadPrefix(job int64, step, unit int) string {
	return fmt.Sprintf("job/%d/%d/u%d", job, step, unit)
}

// UploadUnits lists a file step's upload units in a fixed order: sources in
// order, hosts in order. Artifact sources need none.
func (f *FileSpec) UploadUnits() []UploadUnit {
	var out []UploadUnit
	for i, src := range f.Sources {
		for _, h := range src.Hosts {
			out = append(out, UploadUnit{Source: i, Host: h})
		}
	}
	return out
}
