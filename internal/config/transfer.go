package config

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"go.starlark.net/starlark"

	"github.com/drover-ci/drover"
)

// DefaultTransferMax bounds an upload or download step that names no
// max_bytes.
const DefaultTransferMax = 1 << 30

// uploadFn is drover.upload(src, dest = None, name = None, max_bytes =
// "1GiB"): send a file or directory of the worker's build directory to the
// master, as artifacts of the build under dest (default: src's last
// element).
func (l *loader) uploadFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	return l.transferStep(thread, fn, args, kwargs, drover.StepUpload)
}

// downloadFn is drover.download(src, dest, name = None, max_bytes =
// "1GiB"): fetch "artifact:<path>" of this build, or "files/<path>" of the
// master's files directory, into dest under the worker's build directory.
func (l *loader) downloadFn(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	return l.transferStep(thread, fn, args, kwargs, drover.StepDownload)
}

func (l *loader) transferStep(thread *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple, kind drover.StepKind) (starlark.Value, error) {
	s := callSite(thread)
	spec := drover.StepSpec{
		Kind:           kind,
		HaltOnFailure:  true,
		FlunkOnFailure: true,
		MaxBytes:       DefaultTransferMax,
		Pos:            s.line(),
	}
	var name, maxBytes, dest, timeout, when starlark.Value
	var src string
	params := []any{"src", &src}
	if kind == drover.StepDownload {
		params = append(params, "dest", &dest)
	} else {
		params = append(params, "dest?", &dest)
	}
	params = append(params, "name?", &name, "max_bytes?", &maxBytes, "max_time?", &timeout,
		"halt_on_failure?", &spec.HaltOnFailure, "flunk_on_failure?", &spec.FlunkOnFailure,
		"warn_on_failure?", &spec.WarnOnFailure, "always_run?", &spec.AlwaysRun, "when?", &when)
	if err := starlark.UnpackArgs(fn.Name(), args, kwargs, params...); err != nil {
		return nil, err
	}
	errorf := func(format string, args ...any) {
		l.errorf(s, "%s: "+format, append([]any{fn.Name()}, args...)...)
	}
	spec.Src = src
	if !isNone(dest) {
		d, ok := starlark.AsString(dest)
		if !ok {
			return nil, fmt.Errorf("%s: for parameter dest: got %s, want string", fn.Name(), dest.Type())
		}
		spec.Dest = d
	}
	if err := CheckInterpolation(spec.Src); err != nil {
		errorf("src: %v", err)
	}
	if err := CheckInterpolation(spec.Dest); err != nil {
		errorf("dest: %v", err)
	}
	workerPath, masterPath := &spec.Src, &spec.Dest
	if kind == drover.StepDownload {
		workerPath, masterPath = &spec.Dest, &spec.Src
		if p, ok := strings.CutPrefix(spec.Src, "artifact:"); ok {
			checkArtifactPath(errorf, "src", p)
		} else if p, ok := strings.CutPrefix(spec.Src, "files/"); ok {
			checkArtifactPath(errorf, "src", p)
		} else {
			errorf("src %q: want \"artifact:<path>\" (an artifact of this build) or \"files/<path>\" (under the master's files directory)", spec.Src)
		}
	} else {
		if spec.Dest == "" {
			spec.Dest = path.Base(path.Clean(filepath.ToSlash(spec.Src)))
		}
		checkArtifactPath(errorf, "dest", *masterPath)
	}
	if p := *workerPath; p == "" || path.IsAbs(p) || filepath.IsAbs(p) || !filepath.IsLocal(filepath.FromSlash(p)) {
		errorf("worker path %q must be relative to the builder's directory and stay inside it", p)
	}
	if isNone(name) {
		spec.Name = string(kind)
	} else if n, ok := starlark.AsString(name); ok {
		spec.Name = n
		if err := checkStepName(n); err != nil {
			errorf("%v", err)
		}
	} else {
		return nil, fmt.Errorf("%s: for parameter name: got %s, want string or None", fn.Name(), name.Type())
	}
	if !isNone(maxBytes) {
		n, err := toSize(maxBytes)
		switch {
		case err != nil:
			errorf("max_bytes: %v", err)
		case n <= 0:
			errorf("max_bytes must be more than zero")
		default:
			spec.MaxBytes = n
		}
	}
	spec.MaxTime = l.optDuration(s, fn, "max_time", timeout, 0)
	if !isNone(when) {
		spec.When = l.conditions(errorf, when)
	}
	return &stepValue{spec: spec, site: s}, nil
}

// checkArtifactPath records an error for an artifact path that is empty,
// absolute, or leaves the artifact directory.
func checkArtifactPath(errorf func(string, ...any), param, p string) {
	if p == "" || strings.ContainsAny(p, "\\\x00") || path.IsAbs(p) || !filepath.IsLocal(filepath.FromSlash(p)) || path.Clean(p) == "." {
		errorf("%s %q must be a relative path without ..", param, p)
	}
}
