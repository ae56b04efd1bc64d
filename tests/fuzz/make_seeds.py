#!/usr/bin/env python3
"""Writes the seed corpus for stack_fuzz into DIR: deterministic inputs of assorted sizes.

The fuzz input is a program of operations read with FuzzedDataProvider (integers from the end of the
input, byte strings from the front), so any byte string is a valid program; seeds of different
lengths and byte distributions just give the fuzzer several starting points. Fixed random seeds keep
runs repeatable.
"""
import random
import sys
from pathlib import Path


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20240501)
    n = 0
    for size in (8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192):
        for variant in range(3):
            if variant == 0:
                data = bytes(rng.randrange(256) for _ in range(size))
            elif variant == 1:  # small values: short payloads, near-zero sequence deltas, short time steps
                data = bytes(rng.randrange(8) for _ in range(size))
            else:  # mostly 0xff / 0x00: extreme values and the largest ranges
                data = bytes(rng.choice((0, 0xFF, rng.randrange(256))) for _ in range(size))
            (out / f"seed-{size}-{variant}").write_bytes(data)
            n += 1
    print(f"wrote {n} seeds to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
