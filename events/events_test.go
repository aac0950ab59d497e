package events

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
)

func TestEncodeDecode(t *testing.T) {
	at := time.Date(2026, 11, 25, 1, 2, 3, 4, time.UTC)
	m, err := Encode("fleetjob/test", Event{Kind: JobFinished, Subject: "42", ID: "42", Time: at, Data: map[string]any{"status": "success"}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "fleetjob.event.job.finished.42" || m.Header.Get("content-type") != "application/json" {
		t.Errorf("subject %q headers %v", m.Subject, m.Header)
	}
	d, err := Decode(m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]string
	json.Unmarshal(d.Data, &data)
	if d.Type != "io.fleetjob.job.finished" || d.ID != "42" || d.Source != "fleetjob/test" || !d.Time.Equal(at) || data["status"] != "success" {
		t.Errorf("decoded %+v", d)
	}
	if _, err := Encode("fleetjob/test", Event{Kind: JobFinished, Subject: "1", Time: at}); err == nil {
		t.Error("an event without an id was encoded")
	}
	m.Header.Del("ce-specversion")
	if _, err := Decode(m.Header, m.Data); err == nil {
		t.Error("a message without ce-specversion decoded")
	}
}

// A commit's events go out as one message named after its headline event;
// DecodeAll gives them back in order, Decode the headline, and the same
// batch has the same message id.
func TestBatches(t *testing.T) {
	at := time.Date(2026, 12, 1, 1, 2, 3, 4, time.UTC)
	commit := []Event{
		{Kind: HostFinished, Subject: "42", ID: "42.0.1", Time: at, Data: map[string]any{"status": "success"}},
		{Kind: StepFinished, Subject: "42", ID: "42.0", Time: at, Data: map[string]any{"id": 42}},
		{Kind: JobFinished, Subject: "42", ID: "42.9", Time: at, Data: map[string]any{"id": 42}},
		{Kind: HostFinished, Subject: "42", ID: "42.0.2", Time: at, Data: map[string]any{"status": "failed"}},
	}
	msgs, err := Batches("fleetjob/test", commit)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Subject != "fleetjob.event.job.finished.42" || msgs[0].Header.Get("content-type") != BatchContentType {
		t.Fatalf("got %d messages, the first on %q with %v", len(msgs), msgs[0].Subject, msgs[0].Header)
	}
	all, err := DecodeAll(msgs[0].Header, msgs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 || all[0].ID != "42.0.1" || all[3].ID != "42.0.2" || all[2].Type != "io.fleetjob.job.finished" || !all[1].Time.Equal(at) {
		t.Fatalf("decoded %+v", all)
	}
	var data map[string]string
	if err := json.Unmarshal(all[3].Data, &data); err != nil || data["status"] != "failed" {
		t.Errorf("data %s: %v", all[3].Data, err)
	}
	if d, err := Decode(msgs[0].Header, msgs[0].Data); err != nil || d.ID != "42.9" {
		t.Errorf("headline %+v, %v", d, err)
	}
	again, _ := Batches("fleetjob/test", commit)
	other, _ := Batches("fleetjob/test", commit[:3])
	if id := msgs[0].Header.Get("Nats-Msg-Id"); id != again[0].Header.Get("Nats-Msg-Id") || id == other[0].Header.Get("Nats-Msg-Id") {
		t.Errorf("message ids: %q, again %q, of another batch %q", id, again[0].Header.Get("Nats-Msg-Id"), other[0].Header.Get("Nats-Msg-Id"))
	}

	// one event is binary mode; a long run splits every MaxBatch events
	one, _ := Batches("fleetjob/test", commit[:1])
	if len(one) != 1 || one[0].Header.Get("ce-id") != "42.0.1" || one[0].Subject != "fleetjob.event.host.finished.42" {
		t.Errorf("one event: %q %v", one[0].Subject, one[0].Header)
	}
	many := make([]Event, MaxBatch+3)
	for i := range many {
		many[i] = Event{Kind: HostFinished, Subject: "7", ID: fmt.Sprintf("7.0.%d", i), Time: at, Data: map[string]any{}}
	}
	split, err := Batches("fleetjob/test", many)
	if err != nil || len(split) != 2 {
		t.Fatalf("%d events in %d messages: %v", len(many), len(split), err)
	}
	if rest, _ := DecodeAll(split[1].Header, split[1].Data); len(rest) != 3 || rest[2].ID != fmt.Sprintf("7.0.%d", MaxBatch+2) {
		t.Errorf("second message: %+v", rest)
	}
	split[1].Header.Set(HeadlineHeader, "9")
	if _, err := Decode(split[1].Header, split[1].Data); err == nil {
		t.Error("a batch whose headline is out of range decoded")
	}
}

// Audit records of a burst are about many objects: they batch by kind.
func TestKindBatches(t *testing.T) {
	at := time.Date(2026, 12, 1, 1, 2, 3, 4, time.UTC)
	evs := []Event{
		{Kind: AuditSubmit, Subject: "41", ID: "a", Time: at, Data: map[string]any{}},
		{Kind: AuditSubmit, Subject: "42", ID: "b", Time: at, Data: map[string]any{}},
		{Kind: AuditStop, Subject: "41", ID: "c", Time: at, Data: map[string]any{}},
		{Kind: AuditSubmit, Subject: "43", ID: "d", Time: at, Data: map[string]any{}},
	}
	msgs, err := KindBatches("fleetjob/test", evs)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("got %d messages, want 3 (submit×2, stop, submit): %v", len(msgs), err)
	}
	if msgs[0].Subject != Subject(AuditSubmit, "42") || msgs[1].Subject != Subject(AuditStop, "41") || msgs[1].Header.Get("ce-id") != "c" {
		t.Errorf("subjects %q %q %q", msgs[0].Subject, msgs[1].Subject, msgs[2].Subject)
	}
	all, err := DecodeAll(msgs[0].Header, msgs[0].Data)
	if err != nil || len(all) != 2 || all[0].Subject != "41" || all[1].ID != "b" {
		t.Errorf("first batch: %+v, %v", all, err)
	}
}

// What the batch encoder writes by hand, the CloudEvents SDK reads as the
// same valid events.
func TestBatchIsCloudEvents(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 2, 3, 4, time.UTC)
	evs := []Event{
		{Kind: HostFinished, Subject: "42", ID: "42.0.1", Time: at, Data: map[string]any{"status": "success", "error": "a \"quoted\" <b>\n"}},
		{Kind: JobFinished, Subject: "42", ID: `é"\`, Time: at.In(time.FixedZone("x", 3600)), Data: []int{1, 2}},
	}
	msgs, err := Batches("fleetjob/test", evs)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(msgs[0].Data, &raw); err != nil || len(raw) != 2 {
		t.Fatalf("not a JSON array of two: %v", err)
	}
	for i, r := range raw {
		var ce cloudevents.Event
		if err := json.Unmarshal(r, &ce); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if err := ce.Validate(); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
		want, _ := json.Marshal(evs[i].Data)
		if ce.ID() != evs[i].ID || ce.Source() != "fleetjob/test" || ce.Type() != TypePrefix+evs[i].Kind || ce.Subject() != "42" ||
			!ce.Time().Equal(at) || ce.DataContentType() != "application/json" || string(ce.Data()) != string(want) {
			t.Errorf("event %d read back as %s", i, ce)
		}
	}
}

// A headline event's hints go on its message's headers, alone or in a
// batch; the hints of the other events of a batch do not.
func TestHintsRideOnTheHeadline(t *testing.T) {
	now := time.Now()
	finished := Event{Kind: JobFinished, Subject: "7", ID: "7.1", Time: now, Data: map[string]any{"id": 7},
		Hints: map[string]string{HintCallback: "0"}}
	host := Event{Kind: HostFinished, Subject: "7", ID: "x", Time: now, Data: map[string]any{"id": 7},
		Hints: map[string]string{"Fleetjob-Other": "1"}}
	alone, err := Encode("test", finished)
	if err != nil {
		t.Fatal(err)
	}
	if got := alone.Header.Get(HintCallback); got != "0" {
		t.Errorf("alone: %s %q, want 0", HintCallback, got)
	}
	msgs, err := Batches("test", []Event{host, finished})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	m := msgs[0]
	if m.Subject != Subject(JobFinished, "7") || m.Header.Get(HintCallback) != "0" || m.Header.Get("Fleetjob-Other") != "" {
		t.Errorf("batch %s: headers %v, want the job.finished hint alone", m.Subject, m.Header)
	}
}
