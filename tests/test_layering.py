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
