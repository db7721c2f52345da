"""Every command in README.md and docs/*.md runs as shown, and the docs carry no development history.

Where commands are found: in the shell code blocks of each page, that is

- fenced blocks (```` ``` ```` or ``~~~``) whose language is empty, ``sh``, ``bash``, ``shell`` or ``console``;
- indented blocks: lines indented by 4 or more spaces that follow a blank line, outside fenced blocks.

Which lines are commands: after an optional ``$ `` prompt and ``NAME=value`` environment assignments, a
line is a command when its first word is one of :data:`COMMAND_WORDS` (``python``, ``dvc``, ``pip``,
``make``, ``pytest``, ``cp``, ``ruff``, ``torchrun``, ``git``); every other line is output and is not
checked. ``# ...`` comments are dropped, a trailing ``\\`` joins the next line, and ``&&``, ``||``, ``;`` and
``|`` separate commands. ``<name>`` is a placeholder (for a file, ``configs/<name>.yaml``, some file must
match).

What is checked, per command:

- ``python stages/<x>.py ...``, ``python -m stages.<x> ...``, ``python benchmarks/<x>.py ...`` and the
  script after ``torchrun``'s own options: the script exists and its own argument parser (its
  ``build_parser()``, which every stage and benchmark script has) accepts the arguments as shown;
- ``dvc ...``: DVC's own parser accepts it; ``dvc repro``, ``dvc exp run`` and ``dvc commit`` name stages
  of dvc.yaml; every ``-S key=value`` names a key of params.yaml, and params.yaml with each of its values
  (``a,b,c`` is a sweep) passes the params schema;
- ``make <target>``: the target is in the Makefile; ``cp <file> ...``: the file exists, and a file copied to
  ``params.yaml`` passes the params schema;
  ``pip install -r <file>``: the file exists; ``pytest <path>``: the path exists;
- ``torchrun``'s own options: torchrun's parser accepts them (a slow test: it imports torch);
- ``ruff`` and ``git`` are not checked.

A block right after a line ``<!-- test: run -->`` (invisible on the rendered page) is also run for real,
in a copy of the project (tests/projectcopy.py: what a clone holds), and must exit 0: mark only cheap ones.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import glob
import io
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml
from ruamel.yaml import YAML

from petseg.errors import ParamsError
from petseg.params import load_params, read_yaml, validate
from tests.projectcopy import copy_project, dvc_env

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_WORDS = ("python", "python3", "dvc", "pip", "make", "pytest", "cp", "ruff", "torchrun", "git")
SHELL_LANGUAGES = ("", "sh", "bash", "shell", "console")
RUN_MARKER = "<!-- test: run -->"
PLACEHOLDER = "PLACEHOLDER"
SEPARATORS = ("&&", "||", ";", "|")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*\s+")
HISTORY = [  # words of development history: the docs describe the project as it is
    r"\b(previous|earlier|old|former)\s+(development\s+)?machines?\b",
    r"\bissues?\s*#?\d+",
    r"\bthis session\b",
    r"\bpreviously\b",
    r"\bcommit\s+[0-9a-f]{7,40}\b",
    r"\b20\d\d-\d\d-\d\d\b",  # a dated measurement: a figure names its result file, command and machine instead
]


@dataclass(frozen=True)
class Block:
    line: int  # of the block's first line, from 1
    lines: tuple[str, ...]
    run: bool


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    argv: tuple[str, ...]
    run: bool

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {shlex.join(self.argv)}"


def code_blocks(text: str) -> list[Block]:
    """The shell code blocks of a Markdown text (see the module docstring)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    marker = False  # the last non-blank line was the run marker
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^ {0,3}(`{3,}|~{3,})\s*([\w-]*)", line)
        if fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence.group(1))), len(lines))
            if fence.group(2).lower() in SHELL_LANGUAGES:
                blocks.append(Block(i + 2, tuple(lines[i + 1 : end]), marker))
            i, marker = end + 1, False
            continue
        if line.startswith("    ") and line.strip() and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            blocks.append(Block(i + 1, tuple(lines[i:end]), marker))
            i, marker = end, False
            continue
        if line.strip():
            marker = line.strip() == RUN_MARKER
        i += 1
    return blocks


def block_commands(block: Block, page: str) -> list[Command]:
    """The commands of a block, split at ``&&``, ``||``, ``;`` and ``|``."""
    found = []
    joined: list[tuple[int, str]] = []
    for offset, raw in enumerate(block.lines):
        if joined and joined[-1][1].endswith("\\"):
            joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + raw.strip())
        else:
            joined.append((block.line + offset, raw.strip()))
    for number, line in joined:
        line = re.sub(r"^\$\s+", "", line)
        line = re.sub(r"<[A-Za-z][\w.-]*>", PLACEHOLDER, line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError as exc:
            if line.split(maxsplit=1)[:1] and line.split()[0] in COMMAND_WORDS:
                raise AssertionError(f"{page}:{number}: cannot read the command {line!r}: {exc}") from None
            continue
        piece: list[str] = []
        for token in [*tokens, ";"]:
            if token not in SEPARATORS:
                piece.append(token)
                continue
            while piece and ENV_ASSIGNMENT.match(piece[0] + " "):
                piece.pop(0)
            if piece and piece[0] in COMMAND_WORDS:
                found.append(Command(page, number, tuple(piece), block.run))
            piece = []
    return found


def page_commands(path: Path) -> list[Command]:
    page = path.relative_to(REPO).as_posix()
    return [
        command for block in code_blocks(path.read_text(encoding="utf-8")) for command in block_commands(block, page)
    ]


# ---- what each command may name


@cache
def stage_names() -> frozenset[str]:
    return frozenset(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


@cache
def params() -> dict:
    return read_yaml(REPO / "params.yaml")  # as DVC reads it (YAML 1.2)


@cache
def make_targets() -> frozenset[str]:
    return frozenset(re.findall(r"^([\w.-]+)\s*:(?!=)", (REPO / "Makefile").read_text(), re.MULTILINE))


def has_param(key: str) -> bool:
    node = params()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def value_problem(key: str, value: str) -> str | None:
    """Why params.yaml with ``key`` set to each value of a ``-S`` sweep (``a,b,c``) would be refused, if it would."""
    if "(" in value or PLACEHOLDER in value:  # a Hydra sweep function: not checked
        return None
    for item in value.split(","):
        raw = copy.deepcopy(params())
        *path, last = key.split(".")
        node = raw
        for part in path:
            node = node[part]
        node[last] = YAML(typ="safe", pure=True).load(item)
        try:
            validate(raw)
        except ParamsError as exc:
            return f"-S {key}={item}: {exc}"
    return None


def file_exists(name: str) -> bool:
    if PLACEHOLDER in name:
        return bool(glob.glob(str(REPO / name.replace(PLACEHOLDER, "*"))))
    return (REPO / name).exists()


@cache
def script_parser(script: str) -> argparse.ArgumentParser:
    """The argument parser of a stage or benchmark script: its ``build_parser()`` (the script's main() not run)."""
    path = REPO / script
    saved = list(sys.path)
    sys.path.insert(0, str(path.parent))  # as `python <script>` has it: a benchmark imports its neighbours
    try:
        namespace = runpy.run_path(str(path), run_name=f"{path.stem}_parser")
    finally:
        sys.path[:] = saved
    if not callable(namespace.get("build_parser")):
        raise AssertionError(f"{script} has no build_parser() to check the arguments against")
    return namespace["build_parser"]()


SCRIPTS = sorted(
    path.relative_to(REPO).as_posix()
    for path in [*(REPO / "stages").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]
    if "\ndef main(" in path.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_builds_its_parser_without_running(script: str):
    """Each stage and benchmark script with a main() has the build_parser() that docs commands are checked against."""
    assert script_parser(script).format_usage().startswith("usage: ")


def parse_error(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """None when the parser accepts ``args``; else the parser's own message."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as exc:
        if exc.code:
            return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else f"exit {exc.code}"
    except Exception as exc:  # DVC's parser raises its own error after printing the message
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else repr(exc)
    return None


def check_script(script: str, args: list[str]) -> list[str]:
    if not (REPO / script).is_file():
        return [f"{script} does not exist"]
    if not script.startswith(("stages/", "benchmarks/")):
        return []
    error = parse_error(script_parser(script), args)
    return [f"{script} refuses {shlex.join(args)!r}: {error}"] if error else []


@cache
def dvc_parser() -> argparse.ArgumentParser:
    from dvc.cli.parser import get_main_parser

    return get_main_parser()


def check_dvc(args: list[str]) -> list[str]:
    error = parse_error(dvc_parser(), args)
    if error:
        return [f"DVC refuses it: {error}"]
    with contextlib.redirect_stderr(io.StringIO()):
        parsed = dvc_parser().parse_args(args)
    problems = []
    names_stages = args[:1] in (["repro"], ["commit"]) or args[:2] in (["exp", "run"], ["experiments", "run"])
    for target in (getattr(parsed, "targets", None) or []) if names_stages else []:
        stage = target.rpartition(":")[2]
        if stage not in stage_names() and PLACEHOLDER not in stage:
            problems.append(f"no stage {stage!r} in dvc.yaml")
    for assignment in getattr(parsed, "set_param", None) or []:
        target, _, value = assignment.partition("=")
        key = target.rpartition(":")[2].strip()
        if not has_param(key):
            problems.append(f"-S {assignment}: params.yaml has no key {key!r}")
        elif problem := value_problem(key, value):
            problems.append(problem)
    return problems


def check(command: Command) -> list[str]:
    """What is wrong with a command as the page shows it (empty when nothing is)."""
    word, args = command.argv[0], list(command.argv[1:])
    if word in ("python", "python3"):
        if args[:1] == ["-m"] and len(args) > 1:
            if args[1].startswith("stages."):
                return check_script(f"stages/{args[1].removeprefix('stages.')}.py", args[2:])
            return (
                check(Command(command.page, command.line, ("pytest", *args[2:]), command.run))
                if args[1] == "pytest"
                else []
            )
        if args and args[0].endswith(".py"):
            return check_script(args[0], args[1:])
        return []
    if word == "torchrun":
        script = next((i for i, arg in enumerate(args) if arg.endswith(".py")), None)
        return ["torchrun runs no script"] if script is None else check_script(args[script], args[script + 1 :])
    if word == "dvc":
        return check_dvc(args)
    if word == "make":
        return [f"no target {target!r} in the Makefile" for target in args if target not in make_targets()]
    if word == "cp":
        files = [arg for arg in args if not arg.startswith("-")]
        if not files or not file_exists(files[0]):
            return [f"{files[0] if files else 'cp'}: no such file"]
        if files[-1] != "params.yaml":
            return []
        problems = []
        for preset in sorted(glob.glob(str(REPO / files[0].replace(PLACEHOLDER, "*")))):
            try:
                load_params(preset)
            except ParamsError as exc:
                problems.append(f"{Path(preset).relative_to(REPO)} is not a valid params file: {exc}")
        return problems
    if word == "pip":
        return [
            f"{args[i + 1]}: no such file"
            for i, arg in enumerate(args[:-1])
            if arg == "-r" and not file_exists(args[i + 1])
        ]
    if word == "pytest":
        values = {"-m", "-k", "-n", "-p", "--durations", "-c", "--rootdir"}
        paths = [arg for i, arg in enumerate(args) if not arg.startswith("-") and (i == 0 or args[i - 1] not in values)]
        return [f"{path}: no such test file" for path in paths if not file_exists(path.partition("::")[0])]
    return []


ALL_COMMANDS = [command for page in PAGES for command in page_commands(page)]


# ---- the pages


def test_the_pages_show_commands():
    assert len(ALL_COMMANDS) >= 10
    pages = {command.page for command in ALL_COMMANDS}
    assert "README.md" in pages


def runs_benchmark(command: Command) -> bool:
    return any(arg.startswith("benchmarks/") for arg in command.argv[1:2])


@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if not runs_benchmark(c)], ids=str)
def test_every_command_runs_as_shown(command):
    problems = check(command)
    assert not problems, f"{command}: " + "; ".join(problems)


@pytest.mark.slow  # the benchmark scripts import torch before they parse their arguments
@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if runs_benchmark(c)], ids=str)
def test_every_benchmark_command_runs_as_shown(command):
    problems = check(command)
    assert not problems, f"{command}: " + "; ".join(problems)


@pytest.mark.slow  # torchrun's parser comes with torch
@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if c.argv[0] == "torchrun"], ids=str)
def test_torchrun_accepts_its_options_as_shown(command):
    from torch.distributed.run import get_args_parser

    error = parse_error(get_args_parser(), list(command.argv[1:]))
    assert error is None, f"{command}: torchrun refuses it: {error}"


@pytest.mark.slow
def test_a_wrong_torchrun_option_is_reported():
    from torch.distributed.run import get_args_parser

    assert "unrecognized arguments: --nodes=2" in parse_error(get_args_parser(), ["--nodes=2", "stages/train.py"])


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.relative_to(REPO).as_posix())
def test_no_development_history(page):
    text = page.read_text(encoding="utf-8")
    found = [
        f"{page.relative_to(REPO)}:{text[: match.start()].count(chr(10)) + 1}: {match.group(0)!r}"
        for pattern in HISTORY
        for match in re.finditer(pattern, text, re.IGNORECASE)
    ]
    assert not found, "development history in the docs:\n" + "\n".join(found)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in ALL_COMMANDS if c.run], ids=str)
def test_marked_commands_run(command, project):
    env = {**dvc_env(), "PYTHONPATH": str(project)}
    argv = [sys.executable if command.argv[0] in ("python", "python3") else command.argv[0], *command.argv[1:]]
    result = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"


# ---- the checks themselves, on pages made up for them

PAGE = f"""# A page

Text with `python stages/nothing.py` inline: not a block.

    pip install -r requirements.txt   # a comment
    dvc repro evaluate && dvc metrics show
    Experiment   unet_dice_mean        <- output, not a command

{RUN_MARKER}

```sh
$ python stages/compare.py --table
OMP_NUM_THREADS=2 dvc exp run -S 'train.seed=0,1,2' \\
    train_unet
```

```yaml
dvc repro nothing   # yaml, not shell
```
"""


def test_blocks_and_commands_are_read_as_the_docstring_says():
    blocks = code_blocks(PAGE)
    assert [(block.line, block.run) for block in blocks] == [(5, False), (12, True)]
    commands = [c for block in blocks for c in block_commands(block, "page.md")]
    assert [(c.line, c.argv, c.run) for c in commands] == [
        (5, ("pip", "install", "-r", "requirements.txt"), False),
        (6, ("dvc", "repro", "evaluate"), False),
        (6, ("dvc", "metrics", "show"), False),
        (12, ("python", "stages/compare.py", "--table"), True),
        (13, ("dvc", "exp", "run", "-S", "train.seed=0,1,2", "train_unet"), True),
    ]
    assert all(not check(command) for command in commands)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("python stages/compare.py --tabel", "stages/compare.py refuses '--tabel'"),
        ("python -m stages.train unet_large", "invalid choice: 'unet_large'"),
        ("python stages/nothing.py", "stages/nothing.py does not exist"),
        ("python stages/evaluate.py --models unet --treshold 0.4", "unrecognized arguments: --treshold 0.4"),
        ("torchrun --standalone --nproc_per_node=2 stages/train.py unet --epochs 3", "unrecognized arguments"),
        ("dvc repro evalute", "no stage 'evalute' in dvc.yaml"),
        ("dvc exp run -S train.learnig_rate=1e-3 train_unet", "params.yaml has no key 'train.learnig_rate'"),
        ("dvc exp run -S train.loss=focal", "train.loss"),
        ("dvc exp run --queue -S 'train.seed=0,1,-1'", "-S train.seed=-1"),
        ("dvc exp run -S train.nproc_per_node=3 train_unet", "divisible by train.nproc_per_node"),
        ("dvc exp run -S 'train.lr=3e-4,1e-3' -S evaluate.tta=true", None),
        ("dvc metric show", "DVC refuses it"),
        ("make tests", "no target 'tests' in the Makefile"),
        ("cp configs/fast.yaml params.yaml", "configs/fast.yaml: no such file"),
        ("cp configs/<name>.yaml params.yaml", None),
        ("cp dvc.yaml params.yaml", "dvc.yaml is not a valid params file: "),
        ("pip install -r requirements-dev.txt", "requirements-dev.txt: no such file"),
        ("python -m pytest -q tests/test_nothing.py", "tests/test_nothing.py: no such test file"),
        ('pytest -m "not slow" tests/test_docs.py::test_no_development_history', None),
    ],
)
def test_a_wrong_command_is_reported(line, expected):
    (command,) = block_commands(Block(1, (line,), False), "page.md")
    problems = "; ".join(check(command))
    if expected is None:
        assert not problems
    else:
        assert expected in problems


def test_history_words_are_found():
    for text in (
        "On the previous development machine it took 4 min.",
        "as measured in issue 13",
        "Against commit 7359d39",
        "timed on 2026-11-30",
        "earlier in this session",
    ):
        assert any(re.search(pattern, text, re.IGNORECASE) for pattern in HISTORY), text
    assert not any(re.search(pattern, "leaves the previous file intact (treeverse/dvc#10562)") for pattern in HISTORY)
