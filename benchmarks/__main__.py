"""Run every benchmark and print its table: ``python -m benchmarks [name ...]``."""
import importlib
import pkgutil
import sys
from pathlib import Path

from benchmarks.common import machine, summary


def main(names: list[str]) -> None:
    here = Path(__file__).parent
    found = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    print(f"machine: {machine()}", flush=True)
    for name in names or found:
        module = importlib.import_module(f"benchmarks.{name if name.startswith('bench_') else 'bench_' + name}")
        print(module.run(), end="\n\n", flush=True)
    print(summary(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
