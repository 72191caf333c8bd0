#!/usr/bin/env python3
"""Checks the sink's log of a batch in which every 10th record first got a
429 with `Retry-After: 1`: how many requests each record took, and whether
any request reached the host during a wait.

Usage: check_429.py SINK_LOG RECORDS
"""

import collections
import sys


def main():
    path, records = sys.argv[1], int(sys.argv[2])
    rows = []
    with open(path) as log:
        for line in log:
            micros, status, target = line.split()
            # The script's readiness probe requests `/`; only records count.
            if target.startswith("/claims/"):
                rows.append((int(micros), int(status), target.split("?")[0]))
    rows.sort()
    per_record = collections.Counter(target for _, _, target in rows)
    refused = [(micros, target) for micros, status, target in rows if status == 429]
    extra = len(rows) - records
    print(f"requests: {len(rows)} for {records} records, 429s: {len(refused)}, extra requests: {extra}")
    wrong = {target: count for target, count in per_record.items()
             if count != (2 if any(target == t for _, t in refused) else 1)}
    print(f"records with an unexpected number of requests: {len(wrong)}")
    early_retries = 0
    during_wait = 0
    for micros, target in refused:
        retry = [m for m, _, t in rows if t == target and m > micros]
        if not retry or retry[0] < micros + 1_000_000:
            early_retries += 1
        # Requests sent before the 429 reached flowrun may still arrive in
        # the first milliseconds; any later one broke the wait.
        during_wait += sum(1 for m, _, _ in rows if micros + 50_000 < m < micros + 1_000_000)
    print(f"retries sent before their Retry-After: {early_retries}")
    print(f"requests to the host more than 50 ms into a wait: {during_wait}")
    total = (rows[-1][0] - rows[0][0]) / 1e6 if rows else 0
    print(f"first to last request: {total:.2f} s")


if __name__ == "__main__":
    main()
