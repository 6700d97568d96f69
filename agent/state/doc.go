// Package state is an agent's view of its host — the resources the
// controller compiled for it, at one version — and the view's form on disk.
//
// A View is immutable once built: Apply returns a new View with a delta (or
// a snapshot) applied, so a caller can try a delta, translate it, program
// the data plane and only then adopt it, leaving the old one untouched on
// any failure.
//
// Save writes the view as one JSON file, atomically: to a temporary file in
// the same directory, fsync, rename over the old file, fsync the directory.
// A crash at any point leaves either the old or the new file, never a torn
// one. Load reads it back; an agent that restarts without a controller
// programs its data plane from it (headless restart).
//
//	v, err := state.Load(dir) // ErrNoView on first start
//	next, err := v.Apply(delta)
//	err = next.Save(dir)
package state
