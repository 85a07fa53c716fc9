package master

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-ci/drover"
	"github.com/drover-ci/drover/internal/workerhub"
)

// metrics are the master's Prometheus series, on its own registry (no
// global state), served at /metrics.
type metrics struct {
	builds          *prometheus.CounterVec
	buildDuration   *prometheus.HistogramVec
	pending         prometheus.Gauge
	dispatchLatency prometheus.Histogram
}

// newMetrics registers the master's series on reg; those the worker hub
// keeps are read from it when scraped.
func newMetrics(reg prometheus.Registerer, hub *workerhub.Hub) *metrics {
	mt := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_builds_total", Help: "Builds finished, by builder and result.",
		}, []string{"builder", "result"}),
		buildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "drover_build_duration_seconds", Help: "Build durations, by builder.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}, []string{"builder"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_requests_pending", Help: "Build requests waiting for a worker, as of the last dispatch.",
		}),
		dispatchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "drover_request_wait_seconds", Help: "Time from a request's submission to its build's start.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}),
	}
	workers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_workers_connected", Help: "Workers connected to this master.",
	}, func() float64 { return float64(len(hub.Sessions())) })
	logBytes := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "drover_log_bytes_total", Help: "Bytes of command output received.",
	}, func() float64 { return float64(hub.OutputBytes()) })
	reg.MustRegister(mt.builds, mt.buildDuration, workers, mt.pending, logBytes, mt.dispatchLatency)
	return mt
}

func (mt *metrics) buildFinished(builder string, r drover.Result, d time.Duration) {
	mt.builds.WithLabelValues(builder, string(r)).Inc()
	mt.buildDuration.WithLabelValues(builder).Observe(d.Seconds())
}
