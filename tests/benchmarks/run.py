"""`make bench`: run every benchmark module's ``main()`` in turn and report failures.

Each bench module prints its own table. Register a bench by adding its module to ``BENCHES``;
``python -m tests.benchmarks.run bench_usage`` runs only the named ones.
"""

from __future__ import annotations

import importlib
import sys

BENCHES = [
    "tests.benchmarks.bench_usage",
    "tests.benchmarks.bench_polling",
    "tests.benchmarks.bench_load",
    "tests.benchmarks.bench_live",
    "tests.benchmarks.bench_list",
    "tests.benchmarks.bench_stop",
]


def main(argv: list[str]) -> int:
    """Run the benches named in ``argv`` (short names), or all; return 1 if any failed."""
    chosen = [b for b in BENCHES if not argv or b.rsplit(".", 1)[-1] in argv]
    failed = []
    for name in chosen:
        print(f"== {name} ==", flush=True)
        status = importlib.import_module(name).main()
        if status:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
