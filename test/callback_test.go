package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fleetjob/fleetjob/api/bkjob"
	"github.com/fleetjob/fleetjob/internal/testenv"
	"github.com/fleetjob/fleetjob/schemas"
	"github.com/fleetjob/fleetjob/workers/callback"
)

func TestCallbackRetriedUntilDelivered(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		got = append(got, r.Header.Get("Content-Type")+" "+string(b))
		if calls < 3 { // the first round (JSON, then form) fails
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	s := testenv.Start(t, testenv.Options{Workers: 1, Agents: []string{"c1=127.0.0.81"}})
	body := script("true", "127.0.0.81")
	body["callback_url"] = srv.URL + "/hook"
	id := submit(t, s, body, nil)
	waitJob(t, s, id, 20*time.Second)
	var rec schemas.CallbackRecord
	testenv.Eventually(t, 30*time.Second, func() bool {
		return s.JSON(t, "GET", fmt.Sprintf("/v1/jobs/%d/callback", id), nil, nil, &rec) == 200 && rec.Delivered
	}, "callback delivered")
	if len(rec.Attempts) != 3 || rec.Attempts[0].HTTPStatus != 500 || rec.Attempts[1].ContentType != "application/x-www-form-urlencoded" || rec.Attempts[2].HTTPStatus != 200 {
		t.Errorf("attempts: %+v", rec.Attempts)
	}
	mu.Lock()
	last := got[len(got)-1]
	mu.Unlock()
	var p callback.Payload
	if err := json.Unmarshal([]byte(last[len("application/json "):]), &p); err != nil {
		t.Fatalf("payload %q: %v", last, err)
	}
	if p.JobInstanceID != id || p.Status != bkjob.BKSuccess || len(p.Steps) != 1 || p.Steps[0].StepInstanceID != id*1000 || p.Steps[0].Status != bkjob.BKSuccess {
		t.Errorf("payload %+v", p)
	}
	if code, _ := s.Do(t, "POST", "/v1/jobs", map[string]any{"callback_url": "ftp://x", "targets": []string{"127.0.0.81"}, "steps": []any{map[string]any{"script": map[string]any{"content": "true"}}}}, nil); code != 400 {
		t.Errorf("bad callback url: %d", code)
	}
}
