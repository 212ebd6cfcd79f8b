#!/usr/bin/env python3
"""Run a command; print `<seconds> <peak RSS in MB>` of it (and its children) on stderr's last line."""
import resource, subprocess, sys, time

start = time.monotonic()
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
elapsed = time.monotonic() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(f"{elapsed:.3f} {peak_kib / 1024:.1f}")
sys.exit(code)
