"""The shape of the code base: layered imports with no cycle, nothing imports train.py,
and every document the code cites is in the repository."""
import ast
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the flat library + the scripts
LIBRARY = sorted(p.stem for p in ROOT.glob("*.py"))
SCRIPTS = sorted(ROOT.glob("benchmarks/*.py"))


def local_imports(path: pathlib.Path, local: set) -> set:
    """Names of the repository's own modules that a file imports, anywhere in it
    (module level or inside a function: a deferred import still makes a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & local


def import_graph() -> dict:
    local = set(LIBRARY)
    return {name: local_imports(ROOT / f"{name}.py", local) - {name} for name in LIBRARY}


def find_cycle(graph: dict):
    """A list of modules forming a cycle, or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_module_imports_have_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nothing_imports_train():
    """train.py is the top: library modules, other scripts and benchmarks never import it."""
    local = set(LIBRARY)
    users = [name for name, deps in import_graph().items() if "train" in deps]
    users += [str(p.relative_to(ROOT)) for p in SCRIPTS if "train" in local_imports(p, local)]
    assert users == [], f"these import train.py: {users}"


# The ground floor: pure pieces that import no module of the project above them. The
# metrics, in particular, are math on arrays: nothing model-related may sit under them.
GROUND_FLOOR = {"metrics": set(), "hardconcrete": set(), "heads": set(), "toy_corpus": set(),
                "trials": set(), "devices": set(), "plots": {"metrics"}}


def test_the_ground_floor_imports_nothing_above_it():
    graph = import_graph()
    for name, allowed in GROUND_FLOOR.items():
        assert graph[name] <= allowed, f"{name}.py imports {sorted(graph[name] - allowed)}"


def test_the_floor_check_sees_a_planted_import(tmp_path):
    planted = tmp_path / "metrics.py"
    planted.write_text("import numpy\ndef f():\n    import classifier\n")
    assert local_imports(planted, set(LIBRARY)) == {"classifier"}


def test_benchmarks_do_not_import_tests():
    for path in SCRIPTS:
        assert "tests" not in local_imports(path, {"tests"}), f"{path.name} imports from tests/"


@pytest.mark.slow
def test_importing_the_library_never_loads_train():
    """The static check above, confirmed by Python itself in a fresh interpreter."""
    modules = [m for m in LIBRARY if m not in ("train",)]
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" \
        + "".join(f"import {m}\n" for m in modules) \
        + "print('train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


OUTSIDE_NOTES = "REFERENCE" + ".md"          # notes kept outside the repository: never cited
CITED_DOC = re.compile(r"\b((?:docs|notebooks|benchmarks|tests)/[\w./-]+\.(?:md|py|ipynb))")


def test_every_cited_document_is_in_the_repository():
    files = [p for p in ROOT.rglob("*")
             if p.suffix in (".py", ".md", ".ipynb") and ".git" not in p.parts]
    missing = []
    for path in files:
        text = path.read_text(errors="replace")
        if OUTSIDE_NOTES in text:
            missing.append(f"{path.relative_to(ROOT)} cites {OUTSIDE_NOTES}, "
                           f"which is not in the repository")
        for cited in set(CITED_DOC.findall(text)):
            if not (ROOT / cited).exists():
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert missing == []
