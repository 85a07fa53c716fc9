package web

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/drover-ci/drover"
)

// Limits on how much a page shows; older rows are a click away in the API.
const (
	recentBuilds  = 50
	recentChanges = 100
	// runningLimit bounds the running builds read for the workers page; a
	// fleet runs far fewer at once.
	runningLimit = 1000
)

// homePage is the data of the home page.
type homePage struct {
	Builds    []drover.Build
	Pending   int
	Connected int
	Workers   int
}

func (s *server) handleHome(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st := s.b.Reader()
	builds, err := st.ListBuilds(ctx, drover.BuildFilter{Limit: recentBuilds})
	if err != nil {
		s.fail(w, r, fmt.Errorf("list recent builds: %w", err))
		return
	}
	pending, err := st.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	if err != nil {
		s.fail(w, r, fmt.Errorf("list pending requests: %w", err))
		return
	}
	workers, err := st.ListWorkers(ctx)
	if err != nil {
		s.fail(w, r, fmt.Errorf("list workers: %w", err))
		return
	}
	p := homePage{Builds: builds, Pending: len(pending), Workers: len(workers)}
	for _, wk := range workers {
		if wk.Connected {
			p.Connected++
		}
	}
	s.render(w, r, http.StatusOK, "home", "home", "Recent builds", p)
}

// builderRow is one line of the builders page.
type builderRow struct {
	drover.Builder
	Last    *drover.Build
	Pending int
}

func (s *server) handleBuilders(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st := s.b.Reader()
	pending, err := st.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending})
	if err != nil {
		s.fail(w, r, fmt.Errorf("list pending requests: %w", err))
		return
	}
	perBuilder := make(map[string]int)
	for _, req := range pending {
		perBuilder[req.Builder]++
	}
	var rows []builderRow
	for _, b := range s.b.Builders() {
		row := builderRow{Builder: b, Pending: perBuilder[b.Name]}
		last, err := st.ListBuilds(ctx, drover.BuildFilter{Builder: b.Name, Limit: 1})
		if err != nil {
			s.fail(w, r, fmt.Errorf("last build of %s: %w", b.Name, err))
			return
		}
		if len(last) > 0 {
			row.Last = &last[0]
		}
		rows = append(rows, row)
	}
	s.render(w, r, http.StatusOK, "builders", "builders", "Builders", rows)
}

// builderPage is the data of one builder's page.
type builderPage struct {
	Builder     *drover.Builder
	Builds      []drover.Build
	Pending     []drover.BuildRequest
	Eligibility []drover.Eligibility
	EligErr     string
}

func (s *server) handleBuilder(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	b, ok := s.b.Builder(name)
	if !ok {
		s.fail(w, r, drover.Errorf(drover.NotFound, "no builder named %q", name))
		return
	}
	st := s.b.Reader()
	p := builderPage{Builder: b}
	var err error
	if p.Builds, err = st.ListBuilds(ctx, drover.BuildFilter{Builder: name, Limit: recentBuilds}); err != nil {
		s.fail(w, r, fmt.Errorf("list builds of %s: %w", name, err))
		return
	}
	if p.Pending, err = st.ListRequests(ctx, drover.RequestFilter{State: drover.RequestPending, Builder: name}); err != nil {
		s.fail(w, r, fmt.Errorf("list pending requests of %s: %w", name, err))
		return
	}
	// The eligibility table is an explanation, not the page's purpose: if
	// the master cannot answer, say so in place and show the rest.
	if p.Eligibility, err = s.b.Eligibility(ctx, name); err != nil {
		s.logger.Warn("eligibility", "builder", name, "err", err)
		p.EligErr = drover.Message(err)
	}
	slices.SortStableFunc(p.Eligibility, func(a, b drover.Eligibility) int {
		if a.Eligible != b.Eligible {
			if a.Eligible {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Worker, b.Worker)
	})
	s.render(w, r, http.StatusOK, "builder", "builders", b.Name, p)
}

func (s *server) handleBuildByNumber(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	n, err := strconv.Atoi(r.PathValue("number"))
	if err != nil || n <= 0 {
		s.fail(w, r, drover.Errorf(drover.NotFound, "no build %q of builder %q", r.PathValue("number"), name))
		return
	}
	b, err := s.b.Reader().GetBuildByNumber(r.Context(), name, n)
	if err != nil {
		s.fail(w, r, fmt.Errorf("build %s #%d: %w", name, n, err))
		return
	}
	s.buildPage(w, r, b)
}

func (s *server) handleBuildByID(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(w, r, drover.Errorf(drover.NotFound, "no build %q", r.PathValue("id")))
		return
	}
	b, err := s.b.Reader().GetBuild(r.Context(), id)
	if err != nil {
		s.fail(w, r, fmt.Errorf("build %d: %w", id, err))
		return
	}
	s.buildPage(w, r, b)
}

// buildPage is the data of a build's page.
type buildPage struct {
	Build      *drover.Build
	Steps      []stepView
	Live       bool // the build runs: the page follows it
	HasBuilder bool // the builder is still in the config
	// Locks are the locks the build holds or waits for.
	Locks []buildLock
	// Artifacts are the files the build uploaded.
	Artifacts []drover.Artifact
}

// stepView is a step with its logs, and whether to show it opened.
type stepView struct {
	drover.Step
	Logs []logView
	Open bool
}

func (s *server) buildPage(w http.ResponseWriter, r *http.Request, b *drover.Build) {
	ctx := r.Context()
	st := s.b.Reader()
	p := buildPage{Build: b, Live: b.State == drover.BuildRunning}
	_, p.HasBuilder = s.b.Builder(b.Builder)
	if p.Live {
		// A finished build holds no lock; only ask about running ones.
		p.Locks = buildLocks(s.b.Locks(), b.ID)
	}
	// The header and locks fragments need no steps or logs; skip reading
	// them.
	if f := fragmentName(r); f == "header" || f == "locks" {
		s.render(w, r, http.StatusOK, "build", "builders", "", p)
		return
	}
	steps, err := st.ListSteps(ctx, b.ID)
	if err != nil {
		s.fail(w, r, fmt.Errorf("list steps of build %d: %w", b.ID, err))
		return
	}
	logs, err := st.ListLogs(ctx, b.ID)
	if err != nil {
		s.fail(w, r, fmt.Errorf("list logs of build %d: %w", b.ID, err))
		return
	}
	if p.Artifacts, err = st.ListArtifacts(ctx, b.ID); err != nil {
		s.fail(w, r, fmt.Errorf("list artifacts of build %d: %w", b.ID, err))
		return
	}
	byStep := make(map[int][]drover.Log)
	for _, l := range logs {
		byStep[l.StepIndex] = append(byStep[l.StepIndex], l)
	}
	openedFailure := false
	for _, step := range steps {
		v := stepView{Step: step}
		for _, l := range byStep[step.Index] {
			v.Logs = append(v.Logs, s.readLog(ctx, l))
		}
		switch {
		case step.State == drover.StepRunning:
			v.Open = true
		case step.State == drover.StepFinished && !step.Result.IsGood() && step.Result != drover.Cancelled && !openedFailure:
			// Open the first step that went wrong: that is the log people
			// came to read.
			v.Open, openedFailure = true, true
		}
		p.Steps = append(p.Steps, v)
	}
	title := fmt.Sprintf("%s #%d", b.Builder, b.Number)
	s.render(w, r, http.StatusOK, "build", "builders", title, p)
}

// workerRow is one line of the workers page.
type workerRow struct {
	drover.Worker
	Avail   availView
	Running []drover.Build
}

func (s *server) handleWorkers(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st := s.b.Reader()
	workers, err := st.ListWorkers(ctx)
	if err != nil {
		s.fail(w, r, fmt.Errorf("list workers: %w", err))
		return
	}
	running, err := st.ListBuilds(ctx, drover.BuildFilter{State: drover.BuildRunning, Limit: runningLimit})
	if err != nil {
		s.fail(w, r, fmt.Errorf("list running builds: %w", err))
		return
	}
	byWorker := make(map[string][]drover.Build)
	for _, b := range running {
		byWorker[b.Worker] = append(byWorker[b.Worker], b)
	}
	p := workersPage{Workers: make([]workerRow, 0, len(workers))}
	for _, wk := range workers {
		row := workerRow{Worker: wk, Avail: availabilityOf(wk), Running: byWorker[wk.Name]}
		if wk.Approval == drover.ApprovalPending {
			p.Awaiting = append(p.Awaiting, row)
			continue
		}
		p.Workers = append(p.Workers, row)
	}
	s.render(w, r, http.StatusOK, "workers", "workers", "Workers", p)
}

// workersPage is the data of the workers page: the fleet, and apart from
// it the workers that enrolled while approval is required and wait for an
// admin, so that they stand out rather than sit dim among the others.
type workersPage struct {
	Workers  []workerRow
	Awaiting []workerRow
}

// workerPage is the data of one worker's page.
type workerPage struct {
	Worker  *drover.Worker
	Avail   availView
	Choices []string // for the availability form
	Builds  []drover.Build
}

func (s *server) handleWorker(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	st := s.b.Reader()
	wk, err := st.GetWorker(ctx, name)
	if err != nil {
		s.fail(w, r, fmt.Errorf("worker %q: %w", name, err))
		return
	}
	builds, err := st.ListBuilds(ctx, drover.BuildFilter{Worker: name, Limit: recentBuilds})
	if err != nil {
		s.fail(w, r, fmt.Errorf("list builds of worker %q: %w", name, err))
		return
	}
	p := workerPage{Worker: wk, Avail: availabilityOf(*wk), Choices: availabilityChoices(), Builds: builds}
	s.render(w, r, http.StatusOK, "worker", "workers", wk.Name, p)
}

func (s *server) handleChanges(w http.ResponseWriter, r *http.Request) {
	changes, err := s.b.Reader().ListChanges(r.Context(), drover.ChangeFilter{Limit: recentChanges})
	if err != nil {
		s.fail(w, r, fmt.Errorf("list changes: %w", err))
		return
	}
	s.render(w, r, http.StatusOK, "changes", "changes", "Changes", changes)
}
