package master

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/drover-ci/drover"
)

// metrics are the master's Prometheus series, on its own registry (no
// global state), served at /metrics.
type metrics struct {
	builds           *prometheus.CounterVec
	buildDuration    *prometheus.HistogramVec
	workersConnected prometheus.Gauge
	pending          prometheus.Gauge
	logBytes         prometheus.Counter
	dispatchLatency  prometheus.Histogram
}

func newMetrics(reg *prometheus.Registry, m *Master) *metrics {
	mt := &metrics{
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_builds_total", Help: "Builds finished, by builder and result.",
		}, []string{"builder", "result"}),
		buildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "drover_build_duration_seconds", Help: "Build durations, by builder.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}, []string{"builder"}),
		workersConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_workers_connected", Help: "Workers connected to this master.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_requests_pending", Help: "Build requests waiting for a worker, as of the last dispatch.",
		}),
		logBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_log_bytes_total", Help: "Bytes of command output received.",
		}),
		dispatchLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "drover_request_wait_seconds", Help: "Time from a request's submission to its build's start.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 12),
		}),
	}
	reg.MustRegister(mt.builds, mt.buildDuration, mt.workersConnected, mt.pending, mt.logBytes, mt.dispatchLatency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return mt
}

func (mt *metrics) buildFinished(builder string, r drover.Result, d time.Duration) {
	mt.builds.WithLabelValues(builder, string(r)).Inc()
	mt.buildDuration.WithLabelValues(builder).Observe(d.Seconds())
}
