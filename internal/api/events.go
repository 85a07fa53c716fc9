package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// streamEvents relays the master's events as server-sent events, each
// named by its type with the event as JSON data, until the client goes
// away or the master closes the subscription (it is shutting down).
func (s *server) streamEvents(w http.ResponseWriter, r *http.Request) error {
	sub := s.b.Events()
	defer sub.Close()
	sse := newSSEWriter(w)
	if err := sse.start(); err != nil {
		return nil // the client went away
	}
	heartbeat := time.NewTicker(s.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case e, ok := <-sub.C:
			if !ok {
				return nil
			}
			data, err := json.Marshal(e)
			if err != nil {
				return fmt.Errorf("encode event %s: %w", e.Type, err)
			}
			if err := sse.event(string(e.Type), "", string(data)); err != nil {
				return nil
			}
		case <-heartbeat.C:
			if err := sse.comment("heartbeat"); err != nil {
				return nil
			}
		case <-r.Context().Done():
			return nil
		}
	}
}
