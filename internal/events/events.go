// Package events fans out notices of state changes inside a master (a build
// started, a step finished, a worker connected) to whoever watches: the web
// UI's server-sent events, the dispatcher's wake-ups, reporters.
//
// Publishing never blocks: a subscriber that does not keep up loses events
// and is told so by a Lagged event, after which it should re-read state
// from the store. Events are hints to look again, not the state itself.
package events

import (
	"sync"
)

// Type names what changed.
type Type string

const (
	BuildStarted   Type = "build.started"
	BuildFinished  Type = "build.finished"
	StepStarted    Type = "step.started"
	StepFinished   Type = "step.finished"
	StepUpdated    Type = "step.updated" // a running step's links changed
	RequestAdded   Type = "request.added"
	RequestChanged Type = "request.changed"
	WorkerChanged  Type = "worker.changed"
	ChangeAdded    Type = "change.added"
	ConfigLoaded   Type = "config.loaded"
	// Lagged is sent to a subscriber that missed events.
	Lagged Type = "lagged"
)

// Event is a notice that something changed. IDs say what to re-read.
type Event struct {
	Type    Type   `json:"type"`
	Builder string `json:"builder,omitempty"`
	BuildID int64  `json:"build_id,omitempty"`
	Step    int    `json:"step,omitempty"`
	Worker  string `json:"worker,omitempty"`
	Request int64  `json:"request_id,omitempty"`
	Result  string `json:"result,omitempty"`
	// Origin is the ID of the master of the site where it happened, for
	// events that came from another master; "" for this master's own.
	Origin string `json:"origin,omitempty"`
}

// subscriberBuffer bounds what a slow subscriber can hold before it lags.
const subscriberBuffer = 256

// Bus is a publish/subscribe hub. The zero value is ready to use.
type Bus struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
}

// Subscription receives events on C until Close.
type Subscription struct {
	C      <-chan Event
	c      chan Event
	bus    *Bus
	lagged bool
}

// Subscribe starts receiving every event published from now on.
func (b *Bus) Subscribe() *Subscription {
	c := make(chan Event, subscriberBuffer)
	s := &Subscription{C: c, c: c, bus: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(c)
		return s
	}
	if b.subs == nil {
		b.subs = make(map[*Subscription]struct{})
	}
	b.subs[s] = struct{}{}
	return s
}

// Close stops the subscription and closes C. It is idempotent.
func (s *Subscription) Close() {
	b := s.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.c)
	}
}

// Publish sends e to every subscriber without blocking.
func (b *Bus) Publish(e Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if s.lagged {
			// Make room for the Lagged notice first; the subscriber will
			// re-read state anyway.
			select {
			case s.c <- Event{Type: Lagged}:
				s.lagged = false
			default:
				continue
			}
		}
		select {
		case s.c <- e:
		default:
			s.lagged = true
		}
	}
}

// Close closes every subscription; later subscriptions start closed.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		delete(b.subs, s)
		close(s.c)
	}
}
