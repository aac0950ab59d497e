package events

import (
	"encoding/json"
	"testing"
	"time"
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
