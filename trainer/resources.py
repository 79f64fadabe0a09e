"""This process's memory, for the epoch log, history.json and the benchmark."""

import os
import resource


def peak_rss_mb() -> float:
  """Peak resident memory so far, in MiB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
  """Resident memory now, in MiB; the peak where /proc is missing (not Linux)."""
  try:
    with open("/proc/self/statm") as statm:
      resident_pages = int(statm.read().split()[1])
  except (OSError, IndexError, ValueError):
    return peak_rss_mb()
  return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
