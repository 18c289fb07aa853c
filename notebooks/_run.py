"""Execute the notebooks in place, storing their outputs (run from anywhere):

    .venv/bin/python notebooks/_run.py                       # every notebook
    .venv/bin/python notebooks/_run.py 03_xrai 05_lime       # some of them
    .venv/bin/python notebooks/_run.py --check               # execute without writing

Each notebook runs in a fresh ``python3`` kernel of this interpreter (ipykernel) with the
notebooks folder as working directory. ``execute`` is what ``tests/test_notebooks.py`` calls.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def notebooks() -> list[Path]:
    """The notebooks of this folder, in order."""
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def set_parameters(nb, parameters: dict) -> None:
    """Append ``NAME = value`` lines to the cell tagged ``parameters`` (they override its defaults)."""
    if not parameters:
        return
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            extra = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
            cell.source = cell.source.rstrip("\n") + "\n# overridden\n" + extra
            return
    raise ValueError("the notebook has no cell tagged 'parameters'")


@contextlib.contextmanager
def this_interpreter():
    """Make the kernel name ``python3`` mean this interpreter (``sys.executable`` with
    ipykernel), whatever kernelspecs the user's Jupyter folders hold, and let the notebooks
    pick their own matplotlib backend."""
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "MPLBACKEND")}
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp, "kernels", "python3")
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (xai_torch)", "language": "python"}))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (tmp, saved["JUPYTER_PATH"]) if p)
        os.environ.pop("MPLBACKEND", None)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def execute(path: Path, parameters: Optional[dict] = None, timeout: int = 600):
    """Run one notebook in a fresh kernel; returns the executed notebook (the file is not written).

    Raises ``nbclient.exceptions.CellExecutionError`` naming the failing cell.
    """
    nb = nbformat.read(path, as_version=4)
    set_parameters(nb, parameters or {})
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    with this_interpreter():
        client.execute()
    return nb


def strip_timings(nb) -> None:
    """Drop execution timings from cell metadata so that re-runs diff cleanly."""
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    names = [a for a in argv if not a.startswith("--")]
    paths = [p for p in notebooks() if not names or p.stem in names or p.name in names]
    if not paths:
        print(f"no notebook matches {names}; have {[p.stem for p in notebooks()]}", file=sys.stderr)
        return 2
    for path in paths:
        start = time.perf_counter()
        nb = execute(path)
        strip_timings(nb)
        if not check:
            nbformat.write(nb, path)
        print(f"{path.name}: {time.perf_counter() - start:.1f} s, {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
