"""The notebooks in notebooks/ run end to end and report the numbers they are about.

Every notebook is executed in a fresh ``python3`` kernel of this interpreter (nbclient +
ipykernel, see ``notebooks/_run.py``) with its committed parameters; a cell that raises fails the
test with the cell and the traceback. Then the printed numbers are parsed and checked: the
completeness deltas, the sanity-check ordering, the AUCs, the Guided Grad-CAM identity... The
stored notebooks must match their sources in ``notebooks/_make.py`` and carry outputs.
"""
from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "notebooks"
NAMES = ["01_integrated_gradients", "02_blur_ig_guided_ig", "03_xrai", "04_gradcam", "05_lime",
         "06_guided_backprop", "07_sanity_checks", "08_partition_shap"]
MAX_FOLDER_BYTES = 3 * 1024 * 1024


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"_notebooks_{name}", FOLDER / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


RUN = _module("_run")
MAKE = _module("_make")


def _text(nb) -> str:
    """Everything the code cells printed, in order."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o["text"])
    return "".join(out)


def _images(nb) -> int:
    return sum(any(k.startswith("image/") for k in o.get("data", {}))
               for c in nb.cells for o in c.get("outputs", []))


def _floats(pattern: str, text: str) -> list[float]:
    found = re.findall(pattern, text, flags=re.M)
    assert found, f"no match for {pattern!r} in the notebook's output:\n{text}"
    return [float(v) for m in found for v in (m if isinstance(m, tuple) else (m,))]


def _row(name: str, text: str) -> list[float]:
    """The numbers of the table row that starts with ``name``."""
    m = re.search(rf"^{re.escape(name)}\s+(.*)$", text, flags=re.M)
    assert m, f"no row {name!r} in:\n{text}"
    return [float(v) for v in re.findall(r"-?\d+\.\d+|-?\d+|nan", m.group(1))]


# --- what each notebook must show -----------------------------------------------------------------------
def check_01(text: str) -> None:
    for baseline in ("black", "white", "uniform noise"):
        fx, fb, total, delta, rel, p_base, _ = _row(baseline, text)
        assert math.isclose(total - (fx - fb), delta, abs_tol=0.02), (baseline, total, fx, fb, delta)
        assert rel < 0.4, f"IG from {baseline}: relative completeness error {rel}"
        assert p_base < 0.05, f"the {baseline} baseline should carry no evidence of the class; p = {p_base}"
    gl, adaptive = _floats(r"relative (\d+\.\d+)\)", text)
    assert adaptive < 0.1 and adaptive < gl, (gl, adaptive)
    ahas = _floats(r"half its final value at alpha = (\d+\.\d+)", text)
    assert len(ahas) == 3 and all(0 < a < 1 for a in ahas)


def check_02(text: str) -> None:
    rows = {m: _row(m, text) for m in ("IG (black)", "Blur IG", "Guided IG (black)")}
    for name, (fx, fstart, total, delta, _rel, calls, _) in rows.items():
        assert math.isclose(total - (fx - fstart), delta, abs_tol=0.02), (name, rows[name])
        assert calls > 0
    # Guided IG's adapted path converges with the budget on which straight-line IG does not
    assert rows["Guided IG (black)"][4] < 0.2 and rows["Guided IG (black)"][4] < rows["IG (black)"][4]
    assert len(_floats(r"^Spearman\(.*\) = (-?\d+\.\d+)", text)) == 3


def check_03(text: str) -> None:
    whole, top, rand = _floats(r"p\(.*\) = (\d+\.\d+)", text)
    assert top > rand + 0.1, f"XRAI's top 30 % should carry more of the prediction than a random 30 %: {top} vs {rand}"
    regions = _floats(r"(\d+) ranked regions", text)[0]
    assert regions >= 5


def check_04(text: str) -> None:
    for name in ("chelsea", "coffee", "motorcycle", "rocket"):
        rho, share_cam, share_pp = _row(name, text.split("Spearman", 1)[1])
        assert 0.5 < rho <= 1.0 and 0.3 < share_cam < 1 and 0.3 < share_pp < 1, (name, rho, share_cam, share_pp)
    assert "layer map (4, 1, 7, 7)" in text


def check_05(text: str) -> None:
    assert _floats(r"surrogate R\^2 = (-?\d+\.\d+)", text)[0] > 0.2
    pos, neg = _floats(r"(\d+) superpixels for the class, (\d+) against", text)
    assert pos > 0 and neg > 0
    total, gap = _floats(r"sum of values (-?\d+\.\d+) = p\(x\) - p\(hidden\) = (-?\d+\.\d+)", text)
    assert math.isclose(total, gap, abs_tol=2e-3), "KernelSHAP's efficiency constraint"


def check_06(text: str) -> None:
    diff, scale = _floats(r"max \|GBP x Grad-CAM - Guided Grad-CAM\| = (\S+) \(max \|Guided Grad-CAM\| = (\S+)\)", text)
    assert diff <= 1e-6 * scale and scale > 0
    assert len(_floats(r"top 5 % of pixels: (\d+\.\d+)", text)) == 5


def check_07(text: str) -> None:
    table = text[text.index("| "):]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]
    header, body = rows[0], [r for r in rows[2:] if r and not r[0].startswith("intact")]
    col = {name: header.index(name) for name in ("Gradient", "Guided Backprop", "Grad-CAM")}
    gbp = [float(r[col["Guided Backprop"]]) for r in body]
    grad = [float(r[col["Gradient"]]) for r in body]
    assert len(body) == 4
    # Adebayo et al.: Guided Backprop barely changes when the top of the network is random
    assert min(gbp[:3]) > 0.9 and max(grad) < 0.7, (gbp, grad)
    aucs = {m: _row(m, text.split("deletion AUC", 1)[1]) for m in ("Gradient", "Guided Backprop", "Grad-CAM", "random")}
    for name, (dele, ins) in aucs.items():
        assert 0 <= dele <= 1 and 0 <= ins <= 1, (name, dele, ins)
    assert aucs["Grad-CAM"][1] > aucs["random"][1], aucs



def check_08(text: str) -> None:
    rows = re.findall(r"sum of values (-?\d+\.\d+) = p\(x\) - p\(inpainted\) = (-?\d+\.\d+)", text)
    assert len(rows) == 4, text   # the four best classes, each adding up (Owen values are efficient)
    assert all(math.isclose(float(a), float(b), abs_tol=2e-3) for a, b in rows), rows
    evals, budget = _floats(r"(\d+) evaluations \(max_evals (\d+)\)", text)
    assert budget <= evals <= budget + 1
    assert "tiger cat" in text.split("Partition SHAP:", 1)[1].splitlines()[1]   # the best class first

CHECKS = {name: globals()[f"check_{name[:2]}"] for name in NAMES}


# --- the tests ------------------------------------------------------------------------------------------
def test_every_notebook_is_listed():
    assert sorted(p.stem for p in RUN.notebooks()) == NAMES
    assert sorted(MAKE.NOTEBOOKS) == NAMES
    readme = (FOLDER / "README.md").read_text()
    assert all(f"{name}.ipynb" in readme for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_matches_source_and_has_outputs(name):
    """The committed notebook is _make.py's source, executed: every code cell ran, none failed."""
    nb = nbformat.read(FOLDER / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    want = [(c.cell_type, c.source) for c in MAKE.NOTEBOOKS[name]]
    assert [(c.cell_type, c.source) for c in nb.cells] == want, f"{name}.ipynb is stale: run notebooks/_make.py " \
                                                                 "then notebooks/_run.py"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), f"{name}.ipynb is not executed: run notebooks/_run.py"
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert _images(nb) >= 1
    CHECKS[name](_text(nb))  # the stored numbers say what the notebook claims


def test_notebooks_folder_is_small():
    size = sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file())
    assert size < MAX_FOLDER_BYTES, f"notebooks/ holds {size / 2**20:.1f} MiB"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name):
    """Execute the notebook afresh; no cell may fail, and the numbers it prints must hold."""
    nb = RUN.execute(FOLDER / f"{name}.ipynb")
    assert _images(nb) >= 1, "the notebook drew no figures"
    CHECKS[name](_text(nb))
