#!/usr/bin/env python3
"""Prints the median of each command in hyperfine JSON exports, and its
ratio to the first command of the same export.

Usage: medians.py EXPORT.json...
"""

import json
import sys


def main():
    for path in sys.argv[1:]:
        with open(path) as export:
            results = json.load(export)["results"]
        base = results[0]["median"]
        print(path.rsplit("/", 1)[-1])
        for result in results:
            median = result["median"]
            print(f"  {result['command']:<22} median {median * 1000:9.1f} ms"
                  f"  (min {result['min'] * 1000:.1f}, max {result['max'] * 1000:.1f})"
                  f"  {median / base:6.2f}x {results[0]['command']}")


if __name__ == "__main__":
    main()
