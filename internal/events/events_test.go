package events

import (
	"sync"
	"testing"
	"time"
)

// noBlock bounds how long a call that must not block may take before the
// test calls it blocked: far more than any of them needs, so a slow
// machine does not fail the test.
const noBlock = 10 * time.Second

// seq is event number n: its BuildID says its place in publish order.
func seq(n int) Event { return Event{Type: BuildStarted, BuildID: int64(n)} }

// drain receives what s holds now, without waiting for more.
func drain(s *Subscription) []Event {
	var got []Event
	for {
		select {
		case e, ok := <-s.C:
			if !ok {
				return got
			}
			got = append(got, e)
		default:
			return got
		}
	}
}

// recv receives one event from s, failing the test if none comes.
func recv(t *testing.T, s *Subscription) Event {
	t.Helper()
	select {
	case e, ok := <-s.C:
		if !ok {
			t.Fatal("subscription closed, want an event")
		}
		return e
	case <-time.After(noBlock):
		t.Fatal("no event delivered")
		return Event{}
	}
}

// closed reports whether s.C is closed once what it holds is read.
func closed(t *testing.T, s *Subscription) bool {
	t.Helper()
	drain(s)
	select {
	case _, ok := <-s.C:
		return !ok
	default:
		return false
	}
}

// publishAll publishes events first..last on b, failing the test if
// Publish blocks.
func publishAll(t *testing.T, b *Bus, first, last int) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := first; n <= last; n++ {
			b.Publish(seq(n))
		}
	}()
	select {
	case <-done:
	case <-time.After(noBlock):
		t.Fatalf("Publish of events %d..%d blocked", first, last)
	}
}

// checkContract checks what a subscriber may rely on, whatever it lost:
// events come in publish order, none twice, and a Lagged notice comes
// before the first event after any gap.
func checkContract(t *testing.T, got []Event) {
	t.Helper()
	prev, lagged := int64(0), false
	for i, e := range got {
		if e.Type == Lagged {
			lagged = true
			continue
		}
		switch {
		case e.BuildID <= prev:
			t.Fatalf("event %d is number %d after number %d: out of order or doubled", i, e.BuildID, prev)
		case e.BuildID > prev+1 && !lagged:
			t.Fatalf("event %d is number %d after number %d with no Lagged notice between", i, e.BuildID, prev)
		}
		prev, lagged = e.BuildID, false
	}
}

func ids(es []Event) []int64 {
	var out []int64
	for _, e := range es {
		if e.Type != Lagged {
			out = append(out, e.BuildID)
		}
	}
	return out
}

func countLagged(es []Event) int {
	n := 0
	for _, e := range es {
		if e.Type == Lagged {
			n++
		}
	}
	return n
}

func TestPublishOrderToEverySubscriber(t *testing.T) {
	for _, tc := range []struct {
		name        string
		subscribers int
		events      int
	}{
		{"one subscriber, one event", 1, 1},
		{"one subscriber, a full buffer", 1, subscriberBuffer},
		{"three subscribers", 3, 50},
		{"many subscribers, a full buffer", 20, subscriberBuffer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b Bus // the zero value is ready to use
			subs := make([]*Subscription, tc.subscribers)
			for i := range subs {
				subs[i] = b.Subscribe()
			}
			publishAll(t, &b, 1, tc.events)
			for i, s := range subs {
				got := drain(s)
				if len(got) != tc.events {
					t.Fatalf("subscriber %d got %d events, want %d", i, len(got), tc.events)
				}
				for j, e := range got {
					if e != seq(j+1) {
						t.Fatalf("subscriber %d: event %d = %+v, want %+v", i, j, e, seq(j+1))
					}
				}
			}
		})
	}
}

func TestEventFieldsArriveIntact(t *testing.T) {
	var b Bus
	s := b.Subscribe()
	e := Event{Type: StepFinished, Builder: "linux", BuildID: 7, Step: 2, Worker: "w1", Request: 9, Result: "success", Origin: "m2"}
	b.Publish(e)
	if got := recv(t, s); got != e {
		t.Errorf("got %+v, want %+v", got, e)
	}
}

func TestSubscribeSeesOnlyLaterEvents(t *testing.T) {
	var b Bus
	early := b.Subscribe()
	b.Publish(seq(1))
	late := b.Subscribe()
	b.Publish(seq(2))
	if got := ids(drain(early)); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("early subscriber got %v, want [1 2]", got)
	}
	if got := ids(drain(late)); len(got) != 1 || got[0] != 2 {
		t.Errorf("late subscriber got %v, want [2]", got)
	}
}

// A subscriber that does not read fills its buffer; the publisher goes on
// without blocking, the subscriber loses what did not fit, and once it
// has read is told by a Lagged notice before the next event it gets. A
// subscriber that keeps up loses nothing meanwhile.
func TestSlowSubscriberLags(t *testing.T) {
	for _, tc := range []struct {
		name string
		over int // events published beyond what the buffer holds
	}{
		{"one over", 1},
		{"a buffer over", subscriberBuffer},
		{"far over", 10 * subscriberBuffer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b Bus
			slow := b.Subscribe()
			fast := b.Subscribe()
			total := subscriberBuffer + tc.over
			// The fast subscriber reads after every half buffer, so it
			// never falls behind; the slow one never reads.
			var fastGot []Event
			for n := 1; n <= total; n += subscriberBuffer / 2 {
				publishAll(t, &b, n, min(n+subscriberBuffer/2-1, total))
				fastGot = append(fastGot, drain(fast)...)
			}

			got := drain(slow)
			if len(got) != subscriberBuffer || countLagged(got) != 0 {
				t.Fatalf("slow subscriber holds %d events (%d Lagged), want its buffer of %d events", len(got), countLagged(got), subscriberBuffer)
			}
			for i, e := range got {
				if e != seq(i+1) {
					t.Fatalf("slow subscriber's event %d = %+v, want %+v: it keeps the oldest", i, e, seq(i+1))
				}
			}
			// With room again, the next event comes after a Lagged notice.
			b.Publish(seq(total + 1))
			if e := recv(t, slow); e.Type != Lagged {
				t.Fatalf("first event after the gap = %+v, want Lagged", e)
			}
			if e := recv(t, slow); e != seq(total+1) {
				t.Fatalf("event after the Lagged notice = %+v, want %+v", e, seq(total+1))
			}
			b.Publish(seq(total + 2))
			if e := recv(t, slow); e != seq(total+2) {
				t.Fatalf("event after catching up = %+v, want %+v and no more Lagged notices", e, seq(total+2))
			}

			fastGot = append(fastGot, drain(fast)...)
			if len(fastGot) != total+2 || countLagged(fastGot) != 0 {
				t.Fatalf("the subscriber that kept up got %d events (%d Lagged), want all %d", len(fastGot), countLagged(fastGot), total+2)
			}
			checkContract(t, fastGot)
		})
	}
}

// A subscriber that lags again before it has caught up (it read a little,
// not all) is told again; whatever it misses, what it gets keeps the
// contract.
func TestLaggingAgainKeepsTheContract(t *testing.T) {
	var b Bus
	s := b.Subscribe()
	n := 0
	publish := func(k int) {
		publishAll(t, &b, n+1, n+k)
		n += k
	}
	var got []Event
	read := func(k int) {
		for range k {
			got = append(got, recv(t, s))
		}
	}
	publish(subscriberBuffer + 5) // lagged
	read(1)                       // room for the notice only
	publish(3)                    // the notice takes the room; the events are lost
	read(10)
	publish(20) // a notice and events until full again
	got = append(got, drain(s)...)
	publish(1)
	got = append(got, drain(s)...)
	checkContract(t, got)
	if countLagged(got) < 2 {
		t.Errorf("got %d Lagged notices, want one per time the subscriber lagged", countLagged(got))
	}
	if last := got[len(got)-1]; last != seq(n) {
		t.Errorf("last event %+v, want the last one published, %+v", last, seq(n))
	}
}

func TestSubscriptionCloseIsIdempotentAndStopsDelivery(t *testing.T) {
	var b Bus
	s := b.Subscribe()
	other := b.Subscribe()
	b.Publish(seq(1))
	s.Close()
	s.Close() // a second Close does nothing (a double close would panic)
	b.Publish(seq(2))
	// What was buffered before Close can still be read; then C is closed.
	if e, ok := <-s.C; !ok || e != seq(1) {
		t.Fatalf("first receive after Close = %+v, %v; want the event buffered before it", e, ok)
	}
	if e, ok := <-s.C; ok {
		t.Fatalf("received %+v after Close, want C closed", e)
	}
	if got := ids(drain(other)); len(got) != 2 {
		t.Errorf("another subscriber got %v, want both events: one Close must not affect it", got)
	}
}

func TestBusClose(t *testing.T) {
	var b Bus
	subs := []*Subscription{b.Subscribe(), b.Subscribe(), b.Subscribe()}
	b.Publish(seq(1))
	b.Close()
	for i, s := range subs {
		if e, ok := <-s.C; !ok || e != seq(1) {
			t.Errorf("subscription %d: first receive = %+v, %v; want the buffered event", i, e, ok)
		}
		if !closed(t, s) {
			t.Errorf("subscription %d not closed by Bus.Close", i)
		}
		s.Close() // after Bus.Close, still safe
	}
	b.Publish(seq(2)) // delivered to nobody, and no panic
	late := b.Subscribe()
	if !closed(t, late) {
		t.Error("Subscribe after Bus.Close returned an open subscription")
	}
	late.Close()
	late.Close()
	b.Close() // idempotent too
}

// Publishers, subscribers that read, subscribers that close early and a
// Bus.Close in the middle, all at once: run with -race. Nothing may panic
// (a send on a closed channel would), block, or break a subscriber's
// contract.
func TestConcurrentPublishSubscribeClose(t *testing.T) {
	const (
		publishers = 4
		perPub     = 2000
		readers    = 8
		quitters   = 8
	)
	var b Bus
	var wg sync.WaitGroup
	start := make(chan struct{})

	// Each publisher numbers its own events (in Step) so that readers can
	// check order per publisher.
	for p := range publishers {
		wg.Go(func() {
			<-start
			for n := 1; n <= perPub; n++ {
				b.Publish(Event{Type: BuildStarted, Worker: string(rune('a' + p)), BuildID: int64(n)})
			}
		})
	}
	errs := make(chan string, readers)
	for range readers {
		wg.Go(func() {
			s := b.Subscribe()
			<-start
			// A Lagged notice covers the gaps of every publisher: a gap
			// in one publisher's numbers is fine if a notice came since
			// that publisher's previous event.
			last := map[string]int64{}
			lagsAt := map[string]int{}
			lags := 0
			for e := range s.C { // ends when Bus.Close closes C
				if e.Type == Lagged {
					lags++
					continue
				}
				prev, seen := last[e.Worker]
				switch {
				case seen && e.BuildID <= prev:
					errs <- "publisher " + e.Worker + ": an event out of order or doubled"
					return
				case seen && e.BuildID > prev+1 && lags == lagsAt[e.Worker]:
					errs <- "publisher " + e.Worker + ": a gap with no Lagged notice"
					return
				}
				last[e.Worker], lagsAt[e.Worker] = e.BuildID, lags
			}
		})
	}
	for range quitters {
		wg.Go(func() {
			<-start
			s := b.Subscribe()
			for range 10 {
				select {
				case <-s.C:
				default:
				}
			}
			s.Close()
			s.Close()
		})
	}
	wg.Go(func() {
		<-start
		for range 100 {
			b.Subscribe().Close()
		}
		b.Close()
		b.Subscribe().Close()
	})

	done := make(chan struct{})
	go func() {
		close(start)
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("publishers, subscribers or Close blocked")
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
