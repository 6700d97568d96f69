package sim

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// procUsage is a process's resident memory and CPU time.
type procUsage struct {
	RSS int64
	CPU time.Duration
}

// clockTicks is USER_HZ, 100 on every Linux this runs on.
const clockTicks = 100

// readProc reads a process's RSS (/proc/PID/status VmRSS) and user+system
// CPU time (/proc/PID/stat).
func readProc(pid int) (procUsage, error) {
	var u procUsage
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return u, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	// Fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(st, ')')
	if i < 0 {
		return u, fmt.Errorf("parse stat of %d", pid)
	}
	f := bytes.Fields(st[i+1:])
	if len(f) < 13 {
		return u, fmt.Errorf("parse stat of %d: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state); utime is field 14, stime 15.
	ut, _ := strconv.ParseInt(string(f[11]), 10, 64)
	stime, _ := strconv.ParseInt(string(f[12]), 10, 64)
	u.CPU = time.Duration(ut+stime) * time.Second / clockTicks
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return u, fmt.Errorf("read status of %d: %w", pid, err)
	}
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			fs := bytes.Fields(rest)
			if len(fs) > 0 {
				kb, _ := strconv.ParseInt(string(fs[0]), 10, 64)
				u.RSS = kb << 10
			}
		}
	}
	return u, nil
}

// ProcessUsage returns a process's resident memory (bytes) and its user +
// system CPU time, from /proc.
func ProcessUsage(pid int) (rss int64, cpu time.Duration, err error) {
	u, err := readProc(pid)
	return u.RSS, u.CPU, err
}
