"""Run every benchmark and print its table: ``python -m benchmarks [name ...] [--quiet]``. Each benchmark
runs twice, quiet and then with one spinning process per core (:func:`benchmarks.common.busy`), and the
summary shows both ratios of every row (``--quiet``: the quiet pass only; a module with
``BUSY_PASS = False`` runs once: it times both itself, or it is no speed benchmark). ``--gpu``: the one
GPU script instead (:mod:`benchmarks.gpu`, every family on one device; ``--gpu --smoke``: a tiny
CPU run that checks the script works)."""
import contextlib
import importlib
import pkgutil
import sys
from pathlib import Path

from benchmarks.common import LOAD, busy, machine, summary


def main(names: list[str]) -> None:
    if "--gpu" in names:
        from benchmarks import gpu

        families = [n for n in names if not n.startswith("--")]
        print(gpu.run(smoke="--smoke" in names, families=families or None), flush=True)
        print(summary(), flush=True)
        return
    here = Path(__file__).parent
    found = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    phases = ["quiet"] if "--quiet" in names else ["quiet", "busy"]
    names = [n for n in names if not n.startswith("--")]
    print(f"machine: {machine()}", flush=True)
    for name in names or found:
        module = importlib.import_module(f"benchmarks.{name if name.startswith('bench_') else 'bench_' + name}")
        for phase in phases:
            if phase == "busy" and not getattr(module, "BUSY_PASS", True):
                continue  # it measures busy itself, or it is no speed benchmark
            LOAD[0] = phase
            print(f"[{name}: {phase}]", flush=True)
            with busy() if phase == "busy" else contextlib.nullcontext():
                print(module.run(), end="\n\n", flush=True)
    LOAD[0] = "quiet"
    print(summary(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
