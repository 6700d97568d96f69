package bench

// setDefault sets *p to v if *p is the zero value (a field left unset).
func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}
