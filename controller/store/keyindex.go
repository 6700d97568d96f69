package store

// keyIndex maps hashes of keys to slots: an open-addressing table with
// linear probing of 8-byte cells, in one allocation without pointers (a Go
// map of the same takes about twice the memory per key). The keys are not
// kept: find asks the caller whether a slot holds the key sought.
type keyIndex struct {
	cells []keyCell // len is a power of two, or 0
	n     int
}

// keyCell is one slot's place in a keyIndex.
type keyCell struct {
	hash uint32 // of the slot's key; its low bits give the home cell
	slot uint32 // the slot + 1; 0: an empty cell
}

// keyIndexMin is the smallest table.
const keyIndexMin = 16

// find returns the slot of hash h for which is returns true.
func (x *keyIndex) find(h uint32, is func(slot uint32) bool) (uint32, bool) {
	if x.n == 0 {
		return 0, false
	}
	mask := uint32(len(x.cells) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		c := x.cells[i]
		if c.slot == 0 {
			return 0, false
		}
		if c.hash == h && is(c.slot-1) {
			return c.slot - 1, true
		}
	}
}

// insert adds slot under hash h; the key must not be in the index.
func (x *keyIndex) insert(h, slot uint32) {
	if (x.n+1)*4 > len(x.cells)*3 { // load ≤ 3/4
		x.resize(max(2*len(x.cells), keyIndexMin))
	}
	x.put(keyCell{hash: h, slot: slot + 1})
	x.n++
}

func (x *keyIndex) put(c keyCell) {
	mask := uint32(len(x.cells) - 1)
	i := c.hash & mask
	for x.cells[i].slot != 0 {
		i = (i + 1) & mask
	}
	x.cells[i] = c
}

// remove removes slot, inserted under hash h.
func (x *keyIndex) remove(h, slot uint32) {
	mask := uint32(len(x.cells) - 1)
	i := h & mask
	for x.cells[i].slot != slot+1 {
		if x.cells[i].slot == 0 {
			return // not there
		}
		i = (i + 1) & mask
	}
	// Move back the cells after the hole that may go there, so that every
	// cell stays reachable from its home without crossing an empty one.
	for j := (i + 1) & mask; x.cells[j].slot != 0; j = (j + 1) & mask {
		home := x.cells[j].hash & mask
		var stays bool // home lies cyclically in (i, j]
		if i < j {
			stays = i < home && home <= j
		} else {
			stays = i < home || home <= j
		}
		if !stays {
			x.cells[i] = x.cells[j]
			i = j
		}
	}
	x.cells[i] = keyCell{}
	x.n--
	if len(x.cells) > keyIndexMin && x.n*8 < len(x.cells) { // load < 1/8
		x.resize(len(x.cells) / 2)
	}
}

// resize moves the cells to a table of size cells.
func (x *keyIndex) resize(size int) {
	old := x.cells
	x.cells = make([]keyCell, size)
	for _, c := range old {
		if c.slot != 0 {
			x.put(c)
		}
	}
}

func (x *keyIndex) len() int { return x.n }
