"""The one-click launchers: ``launch.sh`` is shellcheck-clean; ``launch.ps1`` parses with a real PowerShell
grammar (tree-sitter-powershell; no PowerShell runs here) and performs the same steps in the same order.

Both scripts are parsed into the list of commands they run, in execution order (calls to the script's own
functions are expanded where they are called), and each step is located in that list.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import tree_sitter_bash
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

ROOT = Path(__file__).resolve().parent.parent
PS1 = ROOT / "launch.ps1"
SH = ROOT / "launch.sh"

Words = list[str]


class Script:
    """A parsed script: its syntax tree and the commands it runs, in order, as lists of words."""

    def __init__(self, path: Path, language: Language, dialect: str) -> None:
        self.path = path
        self.source = path.read_bytes()
        self.dialect = dialect
        self.tree = Parser(language).parse(self.source)
        self.functions: dict[str, Node] = {}
        self._find_functions(self.tree.root_node)
        self.commands: list[Words] = []
        self._collect(self.tree.root_node, stack=())

    def text(self, node: Node) -> str:
        return self.source[node.start_byte:node.end_byte].decode("utf-8")

    def problems(self) -> list[str]:
        found = []

        def walk(node: Node) -> None:
            if node.type == "ERROR" or node.is_missing:
                line, col = node.start_point
                kind = "missing " + node.type if node.is_missing else "syntax error"
                found.append(f"{self.path.name}:{line + 1}:{col + 1}: {kind}: {self.text(node)[:60]!r}")
            for child in node.children:
                walk(child)

        walk(self.tree.root_node)
        return found

    def nodes(self, *types: str) -> list[Node]:
        out = []

        def walk(node: Node) -> None:
            if node.type in types:
                out.append(node)
            for child in node.children:
                walk(child)

        walk(self.tree.root_node)
        return out

    # -------------------------------------------------------------------------------------- commands
    def _find_functions(self, node: Node) -> None:
        if node.type in ("function_statement", "function_definition"):
            name = node.child_by_field_name("name")
            if name is None:
                name = next(c for c in node.children if c.type in ("function_name", "word"))
            self.functions[self.text(name).lower()] = node
        for child in node.children:
            self._find_functions(child)

    def _words(self, command: Node) -> Words:
        """Command name and arguments; strings unquoted, array literals flattened into their elements."""
        words: Words = []

        def leaf(node: Node) -> None:
            if self.dialect == "ps1" and node.type == "string_literal":
                words.append(self.text(node)[1:-1])
                return
            if self.dialect == "sh" and node.type in ("string", "raw_string"):
                words.append(self.text(node)[1:-1])
                return
            if node.type in ("command_argument_sep", "command_substitution", "subexpression", "script_block"):
                return
            if node.type in ("generic_token", "command_parameter", "variable", "word", "simple_expansion",
                             "path_command_name", "command_name", "expansion", "concatenation", "number"):
                words.append(self.text(node))
                return
            if node.child_count == 0:
                if node.type not in ("(", ")", ",", "@(", "&", "@"):
                    words.append(self.text(node))
                return
            for child in node.children:
                leaf(child)

        for child in command.children:
            leaf(child)
        return [w for w in words if w.strip()]

    def _collect(self, node: Node, stack: tuple[str, ...]) -> None:
        if node.type in ("function_statement", "function_definition"):
            return  # function bodies count where they are called
        if node.type == "command":
            words = self._words(command=node)
            self.commands.append(words)
            name = words[0].lower() if words else ""
            if name in self.functions and name not in stack:
                body = self.functions[name]
                for child in body.children:
                    self._collect(child, stack + (name,))
        for child in node.children:
            self._collect(child, stack)

    def first(self, predicate: Callable[[Words], bool]) -> int:
        for i, words in enumerate(self.commands):
            if predicate([w.lower() for w in words]):
                return i
        return -1

    def literals(self) -> list[str]:
        types = ("string_literal",) if self.dialect == "ps1" else ("string", "raw_string", "word")
        return [self.text(n).strip("'\"") for n in self.nodes(*types)]

    def code_text(self) -> str:
        """The source without comments."""
        text = self.source.decode("utf-8")
        for node in sorted(self.nodes("comment"), key=lambda n: -n.start_byte):
            text = text[:node.start_byte] + text[node.end_byte:]
        return text


@pytest.fixture(scope="module")
def ps1() -> Script:
    return Script(PS1, Language(tree_sitter_powershell.language()), "ps1")


@pytest.fixture(scope="module")
def sh() -> Script:
    return Script(SH, Language(tree_sitter_bash.language()), "sh")


def _has_seq(words: Words, *seq: str) -> bool:
    n = len(seq)
    return any(tuple(words[i:i + n]) == seq for i in range(len(words) - n + 1))


def _pip_install(words: Words) -> bool:
    return _has_seq(words, "pip", "install")


STEPS: list[tuple[str, Callable[[Words], bool], Callable[[Words], bool]]] = [
    # (step, how launch.sh does it, how launch.ps1 does it)
    ("create the venv", lambda w: _has_seq(w, "-m", "venv"), lambda w: _has_seq(w, "-m", "venv")),
    ("probe for torch", lambda w: _has_seq(w, "-c", "import torch"), lambda w: _has_seq(w, "-c", "import torch")),
    ("look for an NVIDIA GPU", lambda w: "nvidia-smi" in w, lambda w: "nvidia-smi" in w),
    ("install torch", lambda w: _pip_install(w) and "$spec" in w, lambda w: _pip_install(w) and "$spec" in w),
    ("install the project", lambda w: _pip_install(w) and "-e" in w, lambda w: _pip_install(w) and "-e" in w),
    ("run the tests (--test)", lambda w: _has_seq(w, "-m", "pytest"), lambda w: _has_seq(w, "-m", "pytest")),
    ("run the self-test (--selftest)", lambda w: _has_seq(w, "main.py", "--selftest"),
     lambda w: _has_seq(w, "main.py", "--selftest")),
    ("check the models", lambda w: _has_seq(w, "main.py", "models", "check"),
     lambda w: _has_seq(w, "main.py", "models", "check")),
    ("download missing models", lambda w: _has_seq(w, "main.py", "models", "download"),
     lambda w: _has_seq(w, "main.py", "models", "download")),
    ("start the app", lambda w: w[:1] == ["exec"] and "main.py" in w and "--selftest" not in w,
     lambda w: w[:1] == ["start-process"]),
]


def test_launch_ps1_parses_without_errors(ps1: Script) -> None:
    problems = ps1.problems()
    assert not problems, "launch.ps1 does not parse:\n" + "\n".join(problems)
    assert len(ps1.commands) > 40, f"only {len(ps1.commands)} commands found: the parse is not a real script"


def test_launch_ps1_uses_no_powershell7_only_syntax(ps1: Script) -> None:
    # Windows PowerShell 5.1 (every Windows 10/11) has no && / || pipeline chains.
    chains = [ps1.text(n) for n in ps1.nodes("&&", "||")]
    assert not chains, f"launch.ps1 uses && or || (PowerShell 7 only): {chains}"


def test_launch_sh_parses_without_errors(sh: Script) -> None:
    problems = sh.problems()
    assert not problems, "launch.sh does not parse:\n" + "\n".join(problems)
    assert subprocess.run(["bash", "-n", str(SH)], capture_output=True).returncode == 0


@pytest.mark.parametrize("name", [s[0] for s in STEPS])
def test_both_launchers_perform_each_step(name: str, sh: Script, ps1: Script) -> None:
    _, in_sh, in_ps1 = next(s for s in STEPS if s[0] == name)
    assert sh.first(in_sh) >= 0, f"launch.sh does not {name}"
    assert ps1.first(in_ps1) >= 0, f"launch.ps1 does not {name}"


def test_launchers_run_the_steps_in_the_same_order(sh: Script, ps1: Script) -> None:
    order_sh = [(sh.first(a), name) for name, a, _ in STEPS]
    order_ps1 = [(ps1.first(b), name) for name, _, b in STEPS]
    assert [n for _, n in sorted(order_sh)] == [s[0] for s in STEPS], f"launch.sh order: {sorted(order_sh)}"
    assert [n for _, n in sorted(order_ps1)] == [s[0] for s in STEPS], f"launch.ps1 order: {sorted(order_ps1)}"


def test_ps1_modes_mirror_sh(ps1: Script, sh: Script) -> None:
    params = {ps1.text(n).replace(" ", "").lower() for n in ps1.nodes("script_parameter")}
    assert {"[switch]$test", "[switch]$selftest"} <= params, f"launch.ps1 parameters: {params}"
    sh_modes = {sh.text(n.children[0]) for n in sh.nodes("case_item")}
    assert {"--test", "--selftest"} <= sh_modes, f"launch.sh case patterns: {sh_modes}"
    # The same extras are installed for the test mode, and the same re-run stamp is kept in the venv.
    extras = re.compile(r"^\[test[^\]]*\]$")
    assert {x for x in sh.literals() if extras.match(x)} == {x for x in ps1.literals() if extras.match(x)} != set()
    assert ".installed-" in sh.code_text() and ".installed-" in ps1.code_text()


def test_ps1_honours_the_same_environment_and_picks_torch_builds(ps1: Script, sh: Script) -> None:
    for var in ("INDEXTTS_PYTHON", "INDEXTTS_TORCH_SPEC", "INDEXTTS_TORCH_INDEX"):
        assert var in sh.code_text(), f"launch.sh does not read {var}"
        assert var in ps1.code_text(), f"launch.ps1 does not read {var}"
    literals = ps1.literals()
    assert "https://download.pytorch.org/whl/cpu" in literals
    cuda = [x for x in literals if re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d{3}", x)]
    assert cuda, "launch.ps1 offers no CUDA wheel index"
    # pythonw (no console window) starts the app; winget is offered when Python is missing.
    assert any("pythonw.exe" in x for x in literals)
    assert ps1.first(lambda w: w[:1] == ["winget"] and "python.python.3.11" in w) >= 0


def test_ps1_failures_say_what_to_do_next(ps1: Script) -> None:
    fails = [w for w in ps1.commands if w[:1] == ["Fail"]]
    assert len(fails) >= 5
    for words in fails:
        assert len(words) == 3 and len(words[2]) > 20, f"Fail without a next step: {words}"


def test_launch_sh_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed (apt-get install shellcheck; .ci/run installs it)"
    result = subprocess.run([shellcheck, "-x", str(SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
