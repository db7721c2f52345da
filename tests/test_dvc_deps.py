"""dvc.yaml stays honest: every petseg module a stage's command imports is one of that stage's ``deps:``.

DVC re-runs a stage only when one of its deps changes, so a module the stage imports but does not list
is code whose change DVC never sees. For each stage of dvc.yaml, :func:`uncovered_imports` reads its
command (``python -m stages.<name>`` or ``python stages/<name>.py``), then, with ``ast`` and without
importing anything, every petseg module the script imports, directly or through other petseg modules:

- ``import petseg.a.b`` and ``from petseg.a import b`` (``b`` a submodule or a name in ``petseg.a``),
  relative imports, and imports inside functions;
- every package ``__init__.py`` on the way (importing ``petseg.a.b`` runs ``petseg/__init__.py`` and
  ``petseg/a/__init__.py``);
- lazy package attributes: ``from petseg.a import name``, where ``name`` is not bound in
  ``petseg/a/__init__.py`` but served by its ``def __getattr__``, counts as every module that
  ``__getattr__`` can load (its imports, ``importlib.import_module("petseg.a.b")``, an f-string
  ``f"petseg.a.{...}"`` = every module of ``petseg.a``, and the module names in the ``__init__``'s tables);
- ``importlib.import_module`` with a literal or an f-string anywhere; a module name held in data and
  known only when the code runs (the model registry's ``ModelInfo.module``) is not seen, which is why
  the stages that build a model list the whole ``petseg/models`` folder;
- not imports under ``if TYPE_CHECKING:``, which never run.

Each such file must be covered by a dep (the file itself or a folder above it), and the stage script
must be a dep, except the shared plumbing (:data:`PLUMBING`, the files ARCHITECTURE.md and dvc.yaml's
header name): those modules are neither required nor followed (what they import serves them, e.g. the
params schema reads the model names). The tests after the real project's check add an import that no dep
covers (or remove a dep) on a copy, and show the check reports it.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "petseg"
STAGE_COMMAND = re.compile(r"^python3?\s+(?:-m\s+stages\.(\w+)|stages/(\w+)\.py)(?:\s|$)")
# Code that never changes a result, so no stage lists it: the params schema, io, messages, paths and the model
# registry's names and looks (the plot stage alone lists the registry: it draws with its labels and colours).
PLUMBING = frozenset(
    f"{PACKAGE}/{name}"
    for name in (
        "__init__.py",
        "params.py",
        "schema.py",
        "io.py",
        "cli.py",
        "errors.py",
        "paths.py",
        "system.py",
        "models/registry.py",
    )
)
DRAWS_WITH_THE_REGISTRY = "plot"


class Gap(NamedTuple):
    """A file that a stage runs but that none of its deps covers."""

    stage: str
    path: str  # relative to the project root, with forward slashes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST, skip_getattr: bool = False):
    """Every node of ``tree`` but the bodies of ``if TYPE_CHECKING:`` (and of ``def __getattr__``, if asked)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        elif not (skip_getattr and isinstance(node, ast.FunctionDef) and node.name == "__getattr__"):
            stack.extend(ast.iter_child_nodes(node))


def _bound_names(tree: ast.Module) -> set[str]:
    """The names a module binds at its top level (imports, assignments, functions, classes)."""
    names: set[str] = set()
    for node in _nodes(tree, skip_getattr=True):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


class Walker:
    """Reads each file of one project once and answers which petseg modules a file imports."""

    def __init__(self, root: Path):
        self.root = root
        self.trees: dict[str, ast.Module] = {}
        self.found: dict[str, set[str]] = {}

    def tree(self, path: str) -> ast.Module:
        if path not in self.trees:
            self.trees[path] = ast.parse((self.root / path).read_text(encoding="utf-8"), filename=path)
        return self.trees[path]

    def module_file(self, module: str) -> str | None:
        """The file of a dotted module name (``a/b.py`` or ``a/b/__init__.py``), or None when there is none."""
        if module.split(".")[0] != PACKAGE:
            return None
        base = Path(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if (self.root / candidate).is_file():
                return candidate.as_posix()
        return None

    def lazy_loads(self, package: str) -> set[str]:
        """What a package's ``__getattr__`` can load: its imports, the modules its strings name, f-string prefixes."""
        init = self.tree(self.module_file(package))
        getattr_defs = [node for node in init.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
        found = {name for node in getattr_defs for name in self._names(node, package)}
        found.update(  # the module names it looks up in a table of the __init__ (``_LAZY[name]``)
            node.value
            for node in ast.walk(init)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and self.module_file(node.value)
        )
        return found

    def _names(self, tree: ast.AST, package: str, skip_getattr: bool = False) -> set[str]:
        found: set[str] = set()
        for node in _nodes(tree, skip_getattr):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - node.level + 1], *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                found.add(base)
                for alias in node.names:
                    found |= (
                        {f"{base}.{alias.name}"}
                        if self.module_file(f"{base}.{alias.name}")
                        else self.lazy(base, alias.name)
                    )
            elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
                found |= self._named_by(node.args[0])
        return found

    def lazy(self, package: str, name: str) -> set[str]:
        """The modules ``from package import name`` loads when ``name`` is a lazy attribute of the package."""
        path = self.module_file(package)
        if path is None or not path.endswith("__init__.py"):
            return set()
        init = self.tree(path)
        has_getattr = any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__" for node in init.body)
        if not has_getattr or name in _bound_names(init):
            return set()
        return self.lazy_loads(package)

    def _named_by(self, arg: ast.expr) -> set[str]:
        """The modules a call ``importlib.import_module(arg)`` can load, when ``arg`` says (a literal, an f-string)."""
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return {arg.value}
        if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
            prefix = str(arg.values[0].value)
            folder = self.root / Path(*prefix.rstrip(".").split("."))
            if prefix.endswith(".") and folder.is_dir():
                return {".".join(file.relative_to(self.root).with_suffix("").parts) for file in folder.rglob("*.py")}
        return set()

    def imports(self, path: str) -> set[str]:
        """The dotted names of the petseg modules the file ``path`` imports, with the packages above each."""
        if path in self.found:
            return self.found[path]
        parts = Path(path).with_suffix("").parts
        package = ".".join(parts[:-1])
        own = path.endswith("__init__.py")
        found = self._names(self.tree(path), package, skip_getattr=own)  # a lazy attribute loads only when asked
        modules = {name.removesuffix(".__init__") for name in found if self.module_file(name.removesuffix(".__init__"))}
        for name in list(modules):  # importing a.b.c runs the __init__ of a and of a.b first
            split = name.split(".")
            modules.update(".".join(split[:i]) for i in range(1, len(split)))
        self.found[path] = modules
        return modules

    def stage_files(self, script: str, plumbing: set[str]) -> set[str]:
        """Every file the stage script runs: itself and the petseg modules it reaches, plumbing left out."""
        files = {script}
        todo = [script]
        while todo:
            for module in self.imports(todo.pop()):
                path = self.module_file(module)
                if path is not None and path not in files and path not in plumbing:
                    files.add(path)
                    todo.append(path)
        return files


def _is_import_module(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module"
    )


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep + "/") for dep in deps)


def uncovered_imports(root: Path) -> list[Gap]:
    """Every file a stage of ``root``/dvc.yaml runs that none of its deps covers, sorted by stage and path."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    walker = Walker(root)
    gaps = []
    for stage, spec in stages.items():
        match = STAGE_COMMAND.match(spec["cmd"].strip())
        if match is None:
            raise ValueError(f"dvc.yaml: stage {stage}: cmd {spec['cmd']!r} is not python -m stages.<name>")
        script = f"stages/{match.group(1) or match.group(2)}.py"
        if not (root / script).is_file():
            raise ValueError(f"dvc.yaml: stage {stage}: {script} does not exist")
        deps = [str(dep).removeprefix("./").rstrip("/") for dep in spec.get("deps", [])]
        gaps += [Gap(stage, path) for path in walker.stage_files(script, PLUMBING) if not covered(path, deps)]
    return sorted(gaps)


def describe(gaps: list[Gap]) -> str:
    return "dvc.yaml misses deps:\n" + "\n".join(f"  {gap.stage}: - {gap.path}" for gap in gaps)


# ---- the real project


def test_every_stage_lists_the_code_it_imports():
    gaps = uncovered_imports(REPO)
    assert not gaps, describe(gaps)
    assert all((REPO / path).is_file() for path in PLUMBING), sorted(p for p in PLUMBING if not (REPO / p).is_file())
    # and no stage lists plumbing: a dep that never changes a result would re-run the stage for nothing
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    listed = {(name, dep) for name, spec in stages.items() for dep in spec.get("deps", []) if dep in PLUMBING}
    assert listed == {(DRAWS_WITH_THE_REGISTRY, "petseg/models/registry.py")}


# ---- the check fails when an import that no dep covers is added (on a temporary copy)


def project_copy(tmp_path: Path) -> Path:
    for folder in ("stages", "petseg"):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


def add_to_function(path: Path, function: str, line: str) -> None:
    """Insert ``line`` as the first statement of ``def function`` in the file ``path``."""
    text = path.read_text()
    head = re.search(rf"^( *)def {function}\(.*?\).*?:\n(?:\s*\"\"\".*?\"\"\"\n)?", text, re.MULTILINE | re.DOTALL)
    assert head is not None, f"{path} has no def {function}"
    indent = head.group(1) + "    "
    path.write_text(text[: head.end()] + f"{indent}{line}\n" + text[head.end() :])


@pytest.mark.parametrize(
    ("file", "function", "line", "expected"),
    [
        # an import inside the stage script's main()
        ("stages/compare.py", "main", "from petseg import losses", {Gap("compare", "petseg/losses.py")}),
        # from a package import a submodule, through a module the stage reaches (plot -> petseg.plotting.run)
        (
            "petseg/plotting/run.py",
            "plot_all",
            "from petseg.data import augment",
            {Gap("plot", "petseg/data/augment.py")},
        ),
        # a module loaded by its name, as the model registry does
        (
            "petseg/inference/run.py",
            "infer_folder",
            'importlib.import_module("petseg.data.augment")',
            {Gap("infer", "petseg/data/augment.py")},
        ),
        # a lazy attribute of a package (petseg.models.__getattr__ loads the module its table names)
        (
            "stages/plot.py",
            "main",
            "from petseg.models import UNet",
            {Gap("plot", f"petseg/models/nets/{name}.py") for name in ("unet", "resnet34_unet", "parts")},
        ),
        # in a module three stages run: evaluate (which writes the tables), compare and plot (which read them)
        (
            "petseg/evaluation/tables.py",
            "read_per_image_csv",
            "import petseg.losses",
            {Gap("evaluate", "petseg/losses.py"), Gap("compare", "petseg/losses.py"), Gap("plot", "petseg/losses.py")},
        ),
    ],
    ids=["in-stage-function", "from-package-import-submodule", "by-name", "lazy-attribute", "shared-by-three-stages"],
)
def test_an_import_no_dep_covers_is_reported_with_its_stage(tmp_path, file, function, line, expected):
    root = project_copy(tmp_path)
    before = set(uncovered_imports(root))
    add_to_function(root / file, function, line)
    after = set(uncovered_imports(root))
    assert after - before == expected
    assert before <= after


def test_removed_deps_are_reported(tmp_path):
    root = project_copy(tmp_path)
    before = set(uncovered_imports(root))
    text = (root / "dvc.yaml").read_text()
    infer = text.index("  infer:")
    for dep in ("      - stages/infer.py\n", "      - petseg/predict.py\n"):
        at = text.index(dep, infer)
        text = text[:at] + text[at + len(dep) :]
    (root / "dvc.yaml").write_text(text)
    assert set(uncovered_imports(root)) - before == {Gap("infer", "stages/infer.py"), Gap("infer", "petseg/predict.py")}
