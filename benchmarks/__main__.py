"""Run every benchmark and print its table: ``python -m benchmarks [name ...]``; ``--gpu``: the one
GPU script instead (:mod:`benchmarks.gpu`, every family on one device; ``--gpu --smoke``: a tiny
CPU run that checks the script works)."""
import importlib
import pkgutil
import sys
from pathlib import Path

from benchmarks.common import machine, summary


def main(names: list[str]) -> None:
    if "--gpu" in names:
        from benchmarks import gpu

        families = [n for n in names if not n.startswith("--")]
        print(gpu.run(smoke="--smoke" in names, families=families or None), flush=True)
        print(summary(), flush=True)
        return
    here = Path(__file__).parent
    found = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    print(f"machine: {machine()}", flush=True)
    for name in names or found:
        module = importlib.import_module(f"benchmarks.{name if name.startswith('bench_') else 'bench_' + name}")
        print(module.run(), end="\n\n", flush=True)
    print(summary(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
