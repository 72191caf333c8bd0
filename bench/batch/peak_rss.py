#!/usr/bin/env python3
"""Runs a command and prints its peak resident memory in MiB, read from
VmHWM in /proc/PID/status every 2 ms while it runs. Standard output of the
command goes to /dev/null.

Usage: peak_rss.py COMMAND [ARGS...]
"""

import subprocess
import sys
import time


def main():
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
    peak_kib = 0
    while child.poll() is None:
        try:
            with open(f"/proc/{child.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        peak_kib = max(peak_kib, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.002)
    child.wait()
    print(f"{peak_kib / 1024:.1f}")
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
