package schemas

import "fmt"

// An agent moves a file step's files through the artifact relay, never the
// object store itself: it sends an XferRequest on its own transfer subject
// (XferGetSubject, XferPutSubject) and the relay, after checking that the
// job's step sends that object to (or takes it from) this agent's host,
// answers on the agent's inbox. Refusals and failures are answered with
// the XferErrorHeader set.

// Transfer operations.
const (
	// XferInfo describes an object: an XferObject.
	XferInfo = "info"
	// XferRead sends the object's chunks after stream sequence After
	// straight to the request's reply subject, at most Batch of them, then
	// an end-of-batch status message (a JetStream batch direct get).
	XferRead = "read"
	// XferBegin opens an upload session: an XferSession. Chunks then go to
	// XferSessionSubject, each a request carrying XferChunkHeader; the
	// relay answers each with the count of chunks it has taken. A chunk
	// with XferEndHeader (and no data) ends the upload: the answer is the
	// stored XferObject.
	XferBegin = "begin"
)

// Transfer headers.
const (
	// XferErrorHeader marks a refusal or failure: one of the XferErr codes.
	XferErrorHeader = "Fleetjob-Xfer-Error"
	// XferChunkHeader is an upload chunk's index, from 0.
	XferChunkHeader = "Fleetjob-Xfer-Chunk"
	// XferEndHeader, on the chunk after the last, is the upload's size.
	XferEndHeader = "Fleetjob-Xfer-End"
)

// Transfer error codes (the value of XferErrorHeader).
const (
	XferErrRefused  = "refused"   // not this agent's to read or write
	XferErrNotFound = "not_found" // no such object
	XferErrFailed   = "failed"    // the relay could not do it
)

// XferRequest is an agent's request to the artifact relay.
type XferRequest struct {
	V     int    `json:"v"`
	Op    string `json:"op"`
	JobID int64  `json:"job_id"`
	Step  int    `json:"step"`
	// Unit is the upload unit (uploads only).
	Unit   int    `json:"unit,omitempty"`
	Object string `json:"object"`
	// After and Batch shape a read: chunks after this stream sequence (0:
	// from the first), at most Batch of them.
	After uint64 `json:"after,omitempty"`
	Batch int    `json:"batch,omitempty"`
	// NUID is the object's, from its XferObject: a read of an object
	// replaced since fails rather than mixing two contents.
	NUID string `json:"nuid,omitempty"`
	// Meta is a new object's metadata (begin only); the relay keeps only
	// the keys it knows.
	Meta map[string]string `json:"meta,omitempty"`
}

// Validate checks a request's shape.
func (r *XferRequest) Validate() error {
	switch {
	case r.V != MessageVersion:
		return fmt.Errorf("transfer request version %d: %w", r.V, ErrInvalid)
	case r.Op != XferInfo && r.Op != XferRead && r.Op != XferBegin:
		return fmt.Errorf("transfer operation %q: %w", r.Op, ErrInvalid)
	case r.JobID <= 0 || r.Step < 0 || r.Unit < 0:
		return fmt.Errorf("transfer of job %d step %d unit %d: %w", r.JobID, r.Step, r.Unit, ErrInvalid)
	case r.Object == "" || len(r.Object) > 4096:
		return fmt.Errorf("transfer object name of %d bytes: %w", len(r.Object), ErrInvalid)
	case r.Batch < 0 || r.Batch > 1024:
		return fmt.Errorf("transfer batch %d: %w", r.Batch, ErrInvalid)
	}
	return nil
}

// XferObject describes a stored object.
type XferObject struct {
	Object string `json:"object"`
	NUID   string `json:"nuid"`
	Size   uint64 `json:"size"`
	Chunks uint32 `json:"chunks"`
	// Digest is the store's ("SHA-256=<base64url>").
	Digest string            `json:"digest"`
	Meta   map[string]string `json:"meta,omitempty"`
}

// XferSession is the relay's answer to XferBegin.
type XferSession struct {
	Session string `json:"session"`
	// ChunkSize bounds each chunk's data; Window is how many chunks may be
	// sent before the relay has taken them.
	ChunkSize int `json:"chunk_size"`
	Window    int `json:"window"`
}
