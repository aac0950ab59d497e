package orchestrator

// This file holds the per-job lock that serialises one process's work on
// a job.

import "sync"

// keyedMutex serialises work per job id inside one process.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[int64]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(id int64) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[int64]*keyedEntry{}
	}
	e := k.locks[id]
	if e == nil {
		e = &keyedEntry{}
		k.locks[id] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.locks, id)
		}
		k.mu.Unlock()
	}
}
