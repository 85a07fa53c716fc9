package web

import (
	"net/http"

	"github.com/drover-ci/drover/internal/api"
)

// shortHashLen is how much of the config hash the admin page shows: enough
// to tell two configs apart at a glance and to match `drover reconfig`.
const shortHashLen = 12

// adminPage is the data of the admin page.
type adminPage struct {
	Config    api.ConfigStatus
	ShortHash string
	Site      api.SiteStatus
	SiteErr   string
}

// handleAdmin shows the config in force and how the last load went. It
// only reads: the reload button has the script call the API with an admin
// token typed into the page, as the worker page's availability form does.
func (s *server) handleAdmin(w http.ResponseWriter, r *http.Request) {
	st := s.b.ConfigStatus()
	p := adminPage{Config: st, ShortHash: shortHash(st.Hash)}
	site, err := s.b.Site(r.Context())
	if err != nil {
		s.logger.Error("site status", "err", err)
		p.SiteErr = err.Error()
	}
	p.Site = site
	s.render(w, r, http.StatusOK, "admin", "admin", "Admin", p)
}

func shortHash(h string) string {
	if len(h) > shortHashLen {
		return h[:shortHashLen]
	}
	return h
}
