"""The package's shape, checked: small files, an import graph without cycles, and layers that
only import from below (so a new method is one small file on top of shared helpers)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "xai_torch"
MAX_LINES = 400

#: every module's layer; a module may import only from its own layer or those below it.
#: A module missing here fails ``test_every_module_has_a_layer``: place it on purpose.
LAYERS = [
    # the boundary: one error type and its checks
    ["errors"],
    # building blocks with no knowledge of explainers
    ["adapters", "batching", "hooks", "rules", "layers", "targets", "seeding", "imageops", "space", "segmentation",
     "files", "neuron", "modelio", "task_targets", "threads", "precision",
     "felzenszwalb"],
    # model evaluation and the explainer base
    ["runner", "explainer"],
    # the method families
    ["gradient", "backprop", "cam", "path", "perturbation", "smoothgrad", "region", "relevance", "attention"],
    # what judges explanations, and what pictures them
    ["metrics", "viz"],
    # applications: the packaged assets, the registry, loaders, the report, the command line
    ["zoo", "hubs", "models", "presets", "report", "dataset", "cli", "leaderboard"],
    # the old name of dataset (a shim that warns)
    ["distributed"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports(path: Path) -> set[str]:
    """The ``xai_torch`` modules that ``path`` imports, at any depth of the file except
    ``if TYPE_CHECKING:`` blocks (a function-level import is still an arrow)."""
    module = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("xai_torch"))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("xai_torch"):
                    found.add(node.module)
                continue
            target = _resolve(module, is_package, node.level, node.module)
            folder = ROOT.parent / target.replace(".", "/")
            for alias in node.names:  # ``from . import viz`` names a module, not the package
                if (folder / alias.name).is_dir() or (folder / f"{alias.name}.py").exists():
                    found.add(f"{target}.{alias.name}")
                else:
                    found.add(target)
    return {f for f in found if f != module}


def sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py"))


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sources()}


def top(module: str) -> str:
    """The layer key of a module: its first part below ``xai_torch``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"split these by job (at most {MAX_LINES} lines each): {long}"


def test_every_module_has_a_layer():
    missing = sorted({top(m) for m in graph() if top(m) and top(m) not in RANK and top(m) != "__main__"})
    assert not missing, f"place these modules in LAYERS: {missing}"


def test_imports_only_go_down():
    up = []
    for module, targets in graph().items():
        if top(module) in ("", "__main__"):
            continue  # the public API and ``python -m xai_torch`` sit above everything
        for target in targets:
            if top(target) == "":
                up.append(f"{module} -> xai_torch (import names from the module that defines them)")
            elif top(target) != top(module) and RANK.get(top(target), -1) > RANK.get(top(module), -1):
                up.append(f"{module} -> {target}")
    assert not up, "imports that go up a layer:\n" + "\n".join(sorted(up))


def test_the_import_graph_has_no_cycles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if nxt not in g:
                continue
            # a package importing its own submodules (re-exports) is not a cycle
            if nxt.startswith(node + ".") and (ROOT.parent / node.replace(".", "/") / "__init__.py").exists():
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_resolver_names_relative_imports():
    assert _resolve("xai_torch.path.ig", False, 1, "engine") == "xai_torch.path.engine"
    assert _resolve("xai_torch.path.ig", False, 2, "errors") == "xai_torch.errors"
    assert _resolve("xai_torch.path", True, 1, "ig") == "xai_torch.path.ig"
