package v1

// WriteOptions modify one write of the API (a create, update, patch or
// delete), as Kubernetes' CreateOptions and its siblings do.
type WriteOptions struct {
	// DryRun makes the write do everything but store (?dryRun=All):
	// defaulting, validation, admission and quota run, and the result is
	// the object as it would be stored (or, for a delete, as it was).
	DryRun bool
}

// WriteOption sets a field of WriteOptions.
type WriteOption func(*WriteOptions)

// WithDryRun makes a write a dry run (WriteOptions.DryRun).
func WithDryRun() WriteOption { return func(o *WriteOptions) { o.DryRun = true } }

// NewWriteOptions returns the WriteOptions that opts set.
func NewWriteOptions(opts ...WriteOption) WriteOptions {
	var o WriteOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}
