// Package drover holds the vocabulary of the Drover continuous-integration
// system: changes, source stamps, builders, build requests, builds, steps,
// workers, facts and requirements, results and error kinds.
//
// Everything here is a plain Go value with no I/O. Adapters (the store, the
// worker protocol, the HTTP API, the web UI) translate to and from these types
// at the edges, so the words mean the same thing in every package.
package drover
