// Package backoff computes retry delays: exponential growth with "full
// jitter", the scheme that spreads a herd of clients retrying at the same
// moment (100,000 agents reconnecting after a power restore) evenly over
// time instead of in synchronized waves.
//
// The delay before retry number n (counted from 0) is drawn uniformly from
// [0, min(Max, Min·2ⁿ)]. Without jitter every client that failed at the same
// instant retries at the same instant again; with "equal" or no jitter the
// waves only shrink. Full jitter keeps the expected load per unit of time
// flat: N clients retrying with cap C arrive at about N/C per second.
//
//	p := backoff.Policy{Min: time.Second, Max: 30 * time.Second}
//	for attempt := 0; ; attempt++ {
//		if err := connect(); err == nil {
//			break
//		}
//		time.Sleep(p.Delay(attempt, nil))
//	}
package backoff
