"""The convcalc modules are layered: the core (cvtool/convcalc/, cvtool/compare.py) imports the standard library,
numpy (Pillow for the drawings) and the core only; the CLI's mode modules (cvtool/cli/convcalc/) import the shared common.py, never
command.py (which imports them); nobody borrows another module's underscore-private names. Read from the source."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted((ROOT / "cvtool" / "convcalc").glob("*.py")) + [ROOT / "cvtool" / "compare.py"]
COMMAND = ROOT / "cvtool" / "cli" / "convcalc" / "command.py"
MODES = [p for p in sorted((ROOT / "cvtool" / "cli" / "convcalc").glob("*.py")) if p != COMMAND]


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import in the file, lazy ones inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
    return found


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", CORE, ids=rel)
def test_core_imports_stdlib_numpy_and_core_only(path):
    for module, _ in imports(path):
        top = module.split(".")[0]
        allowed = top in sys.stdlib_module_names or top in ("numpy", "PIL") or (
            top == "cvtool" and not module.startswith("cvtool.cli"))
        assert allowed, f"{rel(path)} imports {module}"


@pytest.mark.parametrize("path", MODES + [COMMAND] + CORE, ids=rel)
def test_no_mode_imports_the_command_or_private_names(path):
    for module, names in imports(path):
        if path in MODES:
            assert module != "cvtool.cli.convcalc.command", f"{rel(path)} imports the command module: a cycle"
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{rel(path)} borrows {private} from {module}"


def test_every_package_is_installed_under_its_import_name():
    """pyproject lists the packages (backends/ installs as cvtool_backends): a new folder must be listed there, and
    nothing may import the folder's own name, which only resolves from the repository root."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts).replace("backends", "cvtool_backends", 1)
             for top in ("cvtool", "backends") for p in (ROOT / top).rglob("__init__.py")}
    assert listed == found
    for path in [*ROOT.glob("cvtool/**/*.py"), *ROOT.glob("backends/**/*.py"), *ROOT.glob("tests/**/*.py"),
                 *ROOT.glob("benchmarks/*.py")]:
        for module, _ in imports(path):
            assert module.split(".")[0] != "backends", f"{rel(path)} imports {module}: use cvtool_backends"


@pytest.mark.parametrize("path", sorted(ROOT.glob("cvtool/**/*.py")) + sorted(ROOT.glob("backends/**/*.py")), ids=rel)
def test_nobody_borrows_private_names(path):
    for module, names in imports(path):
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{rel(path)} borrows {private} from {module}"


# --- the rooms (issue 21): who may import whom -------------------------------------------------------------------
ROOMS = ["core", "data", "model", "convcalc", "train", "backends", "cli"]  # a room imports only rooms before it
CORE_MODULES = {"arithmetic", "bounds", "compare", "errors", "footprint", "fsutil", "glibc_malloc", "metrics", "plot",
                "printable", "timing", "__init__"}


def room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "cvtool_backends":
        return "backends"
    if parts[0] != "cvtool":
        return None
    if len(parts) > 1 and parts[1] == "__main__":  # `python -m cvtool`: the CLI's entry
        return "cli"
    if len(parts) == 1 or parts[1] in CORE_MODULES:
        return "core"
    return parts[1] if parts[1] in ROOMS else None


def module_name(path: Path) -> str:
    rel_parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if rel_parts[0] == "backends":
        rel_parts[0] = "cvtool_backends"
    if rel_parts[-1] == "__init__":
        rel_parts = rel_parts[:-1]
    return ".".join(rel_parts)


SOURCES = sorted(ROOT.glob("cvtool/**/*.py")) + sorted(ROOT.glob("backends/**/*.py"))


def test_every_module_lives_in_a_room():
    for path in SOURCES:
        assert room(module_name(path)) is not None, f"{rel(path)} is in no room of {ROOMS}"


@pytest.mark.parametrize("path", SOURCES, ids=rel)
def test_no_upward_import(path):
    """A room imports only the rooms before it, lazy imports included; the core never imports a backend."""
    mine = room(module_name(path))
    for module, names in imports(path):
        theirs = room(module)
        if theirs is None:
            continue
        if module == "cvtool" and names:  # `from cvtool import arithmetic`: the module named
            theirs = room(f"cvtool.{names[0]}") or "core"
        assert ROOMS.index(theirs) <= ROOMS.index(mine), f"{rel(path)} ({mine}) imports {module} ({theirs})"


def test_no_import_circle():
    """Between modules, lazy imports included: a circle means two modules that cannot be understood apart."""
    graph: dict[str, set[str]] = {}
    known = {module_name(p) for p in SOURCES}
    for path in SOURCES:
        deps = set()
        for module, names in imports(path):
            for cand in [f"{module}.{n}" for n in names] + [module]:
                if cand in known:
                    deps.add(cand)
                    break
        graph[module_name(path)] = deps - {module_name(path)}

    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in graph.get(m, ()):
            if d.startswith(m + ".") or m.startswith(d + "."):  # a package and its own modules
                continue
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_no_module_over_400_lines_without_a_reason():
    for path in SOURCES:
        n = len(path.read_text().splitlines())
        if n > 400:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "over 400 lines" in doc.lower(), f"{rel(path)} has {n} lines and no reason in its docstring"
