package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestCalibrate: both measurements produce a rate, and the line names
// them.
func TestCalibrate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := Calibrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.TCPConnectsPerSec <= 0 || c.EtcdPutsPerSec <= 0 || c.EtcdOpsPerTxn != calibrationOpsPerTxn {
		t.Errorf("calibration %+v: want positive rates", c)
	}
	for _, want := range []string{"connects/s", "puts/s", "load"} {
		if !strings.Contains(c.String(), want) {
			t.Errorf("%q does not say %q", c, want)
		}
	}
	t.Log(c)
}

// TestCalibrateCancelled: a cancelled context is an error, not a rate.
func TestCalibrateCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Calibrate(ctx); err == nil {
		t.Error("Calibrate with a cancelled context: no error")
	}
}
