#!/usr/bin/env python3
"""Times python-hl7's hl7.parse on one HL7 file (LF terminators turned into CR), for
bench/hl7-parse.sh. Prints the median of several runs and a RESULT line.

    python3 bench/hl7-parse.py FILE [SECONDS_PER_RUN] [RUNS]
"""
import statistics
import sys
import time

import hl7


def main() -> None:
    path = sys.argv[1]
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with open(path, "rb") as f:
        data = f.read()
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r").decode("utf-8")
    msg = hl7.parse(text)
    assert str(msg.segment("SCH")[25]) == "Booked", "unexpected sample"

    rates = []
    hl7.parse(text)  # warm-up
    for _ in range(runs):
        n = 0
        start = time.perf_counter()
        while True:
            for _ in range(16):
                hl7.parse(text)
            n += 16
            elapsed = time.perf_counter() - start
            if elapsed >= secs:
                break
        rates.append(n / elapsed)
    rates.sort()
    med = statistics.median(rates)
    version = getattr(hl7, "__version__", "?")
    print(
        f"(e)  python hl7 {version} hl7.parse {med:>23.0f} /s  "
        f"{med * len(text) / 1e6:>8.2f} MB/s  {1e6 / med:>7.1f} µs  "
        f"(runs {rates[0]:.0f}..{rates[-1]:.0f}; {sys.implementation.name} "
        f"{sys.version.split()[0]})"
    )
    print(f"RESULT python_hl7_per_s={med:.0f}")


if __name__ == "__main__":
    main()
