package testcluster

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Memory reads the process's resident memory now (VmRSS) and at its peak
// so far (VmHWM), in bytes, from /proc.
func (s *Server) Memory() (rss, peak int64, err error) {
	pid := s.PID()
	if pid == 0 {
		return 0, 0, fmt.Errorf("%s is not running", s.ID)
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %v", pid, name, err)
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	if rss == 0 || peak == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS or VmHWM", pid)
	}
	return rss, peak, sc.Err()
}

// CloseIdleConnections closes the connections Status, Ready and Do keep
// open to servers, for tests that count a server's connections.
func CloseIdleConnections() { httpClient.CloseIdleConnections() }
