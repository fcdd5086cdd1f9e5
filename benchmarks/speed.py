"""Search-step speed and memory: the engine against the plain supernet, in one run.

Same as `diffnas bench speed` (the code lives in diffnas.bench.speed so the installed CLI has
it); the plain implementation is diffnas.supernet.plain.

    PYTHONPATH=src python benchmarks/speed.py --threads 2 --steps 3 --rounds 2
"""

from __future__ import annotations

import sys

from diffnas.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "speed", *sys.argv[1:]]))
