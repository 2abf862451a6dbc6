"""The package drawn by its imports: every import (lazy ones inside functions included) points down the floors
below, no module imports itself back through a circle, and no file grows far past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "modelprint"

#: Floors, bottom up: a module may import modules of its own floor or lower. Names are module paths below the
#: package; a name that is a package stands for every module in it.
FLOORS: list[set[str]] = [
    {"_version", "errors"},
    {"checks", "integrity", "serving.urls", "data", "architectures", "answers", "models", "importer", "tasks", "metrics", "probing",
     "journal", "gradcam", "losses", "train", "detectors", "serving.client", "serving.http", "serving.json_api", "serving.limits", "serving.parse"},
    {"access", "serving.server", "zoo"},
    {"fingerprints", "watermarks", "evidence.record", "evidence.check"},
    {"evidence.verification", "evidence.replay", "evidence", "protocol", "kit", "demo"},
    {"report"},
    {"cli", "__init__", "__main__", "serving"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _floor(module: str) -> int:
    for number, names in enumerate(FLOORS):
        if module in names:
            return number
    for number, names in enumerate(FLOORS):  # a module inside a package named on a floor
        if module.split(".")[0] in names:
            return number
    raise AssertionError(f"modelprint.{module} is on no floor of tests/test_layout.py: place it")


def _imports(path: Path, module: str) -> set[str]:
    is_package = path.name == "__init__.py"
    here = module.split(".") if is_package and module != "__init__" else module.split(".")[:-1]
    if module == "__init__":
        here = []
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    typing_only = {  # imports under `if TYPE_CHECKING:` never run
        id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
            target = base + (node.module.split(".") if node.module else [])
            for alias in node.names:  # `from . import checks` imports a module
                candidate = ".".join(target + [alias.name])
                found.add(candidate if _exists(candidate) else ".".join(target))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found |= {n.removeprefix("modelprint.") for n in names if n.startswith("modelprint.")}
    return {f for f in found if f and f != module}


def _exists(module: str) -> bool:
    path = PACKAGE.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, _module_name(p)) for p in PACKAGE.rglob("*.py")}


def test_every_import_points_down():
    upward = [
        f"{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)})"
        for a, targets in _graph().items() for b in targets
        if _floor(b) > _floor(a)
    ]
    assert not upward


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(trail + [node, nxt])
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_core_never_imports_the_command_line_or_the_report():
    def top(module: str) -> bool:
        return module.split(".")[0] in {"cli", "report", "__init__", "__main__"}

    offenders = [f"{a} imports {b}" for a, targets in _graph().items() if not top(a) for b in targets if top(b)]
    assert not offenders


def test_files_stay_near_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420}
    assert not long, f"files over 420 lines: {long}"
