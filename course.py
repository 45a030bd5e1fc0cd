"""
Course tooling: one master notebook per lesson gives a student handout and a teacher's
solutions version, and an autograder grades a folder of submitted handouts.

    python course.py build                      # every master -> handout + solutions
    python course.py build 01 07                # only the masters whose name starts so
    python course.py grade submissions/ --out grades.csv

A master (notebooks/masters/<name>.ipynb) is an ordinary notebook that holds
everything: the lesson, the exercises, their reference solutions and the hidden tests.
It is saved without outputs. Three cell tags and one metadata entry mark the parts:

  * tag `answer`, metadata {"course": {"exercise": "ex1"}}: a cell the student edits.
    Inside it, the reference solution sits between two marker lines, and what the
    student gets instead follows a third one:

        def my_prob_one(log_alpha):
            # BEGIN SOLUTION
            return torch.sigmoid(...)
            # STUB
            return None    # YOUR CODE HERE
            # END SOLUTION

    (In markdown the markers are HTML comments, <!-- BEGIN SOLUTION --> etc., which
    render as nothing.) Without a STUB part the stub is `...  # YOUR CODE HERE`.
    A markdown `answer` cell with {"course": {"written": "A"}} instead is a written
    answer: graded by hand, in the notebooks that `grade --graded DIR` saves.
  * tag `hidden-test`, metadata {"course": {"exercise": "ex1", "points": 2,
    "answers": ["[1, 4, 7]"]}}: plain asserts, run by the grader after the student's
    answer; a cell that raises scores 0. "answers" lists the ways the answer could be
    written down; none of them may appear anywhere in the handout.
    When the exercise asks for an implementation of something the library provides, the
    hidden test also lists the library functions that the answer must not call, per
    student function: "blocks": {"my_eer": ["metrics.compute_eer", "metrics.det_curve"]}.
    The grader (and the build, on the reference solutions) then runs that exercise's answer
    cells, and every call of my_eer inside the hidden test, with those functions switched
    off: a call raises BlockedCall ("my_eer must not call metrics.compute_eer ..."), by
    whatever name it is made. The hidden test's own calls of them, outside my_eer, work.
    The exercise text must say which functions are off.
  * tag `solution`: a cell only the solutions version has (notes on the solutions).

`build` writes, for every master, the handout to notebooks/<name>.ipynb (no solution
regions, no solution or hidden-test cells, executed top to bottom so that it reads well
on a code-hosting site) and the solutions version to notebooks/solutions/ (everything,
executed: every hidden test must pass on the reference solutions, or the build fails).
Before a handout is written, `leaks()` checks it against its master: no solution line,
no listed answer and no PASS of a self-check, in the sources or in the outputs.

`grade` never runs a submission as it stands. It runs the MASTER with the student's
answer cells put in place of the reference ones, the solution cells left out and the
hidden tests kept, in a fresh kernel, cell by cell with a time limit. So a student can
neither edit a check nor print PASS to pass one, and a deleted or broken cell costs only
its own exercise. Each exercise scores the points of its hidden tests that pass, and 0,
with a reason, when one of its answer cells raised, hung or was left as handed out.
A submission that is not a readable notebook scores 0 everywhere, with the reason.

Why not otter-grader or nbgrader (both looked at, see notebooks/TEACHING.md): otter's
class grading (`otter grade`) runs in Docker and it pulls in Sphinx, playwright and
pandas; nbgrader needs a course tree, a gradebook database and Jupyter server
extensions, and its CSV export has one total per assignment, without per-exercise
points or reasons. What is needed here is small enough to write on nbclient.
"""

import argparse
import contextlib
import copy
import csv
import functools
import importlib
import os
import pathlib
import re
import tempfile
import threading
import time
import types

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = pathlib.Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"
MASTERS = NOTEBOOKS / "masters"
SOLUTIONS = NOTEBOOKS / "solutions"          # git-ignored: the teacher builds them

# A marker line: "# BEGIN SOLUTION", "### STUB", "<!-- END SOLUTION -->", ...
MARKER = re.compile(r"^\s*(?:#+|<!--)\s*(BEGIN SOLUTION|STUB|END SOLUTION)\s*(?:-->)?\s*$")
DEFAULT_STUB = {"code": "...  # YOUR CODE HERE", "markdown": "*Your answer here.*"}
PASS = re.compile(r"\bPASS\b")                  # what a self-check prints once it is solved
SHORT_LINE = 12                 # shorter solution lines ("return mask") are too common to police

CELL_TIMEOUT_S = 120            # an answer or a hidden test: generous for any honest answer
SETUP_TIMEOUT_S = 1800          # the master's own cells (training runs included)
KILL_GRACE_S = 15               # after an interrupt that does not stop the cell, kill the kernel


# ------------------------------------------------------------------------ the master
def role(cell):
    """'answer', 'hidden-test', 'solution' or None (an ordinary cell)."""
    tags = cell.get("metadata", {}).get("tags", [])
    for name in ("solution", "hidden-test", "answer"):
        if name in tags:
            return name
    return None


def course_meta(cell):
    return cell.get("metadata", {}).get("course", {})


def split_regions(text, kind="code"):
    """(handout text, solutions text, solution lines) of one cell's source."""
    handout, solution, secret = [], [], []
    state = None                                   # None, "solution" or "stub"
    stub = []
    for number, line in enumerate(text.split("\n"), 1):
        match = MARKER.match(line)
        mark = match.group(1) if match else None
        if mark == "BEGIN SOLUTION" and state is None:
            state, stub, indent = "solution", [], re.match(r"\s*", line).group(0)
        elif mark == "STUB" and state == "solution":
            state = "stub"
        elif mark == "END SOLUTION" and state in ("solution", "stub"):
            handout.extend(stub if stub else [indent + DEFAULT_STUB[kind]])
            state = None
        elif mark:
            raise ValueError(f"line {number}: '{line.strip()}' out of order")
        elif state == "solution":
            solution.append(line)
            secret.append(line)
        elif state == "stub":
            stub.append(line)
        else:
            handout.append(line)
            solution.append(line)
    if state is not None:
        raise ValueError("a BEGIN SOLUTION has no END SOLUTION")
    return "\n".join(handout), "\n".join(solution), secret


def answer_key(cell):
    """Which answer a cell holds: its exercise, or 'written:<name>' for a written answer."""
    meta = course_meta(cell)
    return meta.get("exercise") or (f"written:{meta['written']}" if meta.get("written") else None)


def exercises(master):
    """{exercise: points} in the order of the master; points are those of its hidden tests.
    Written answers (metadata course.written) are graded by hand and are not listed."""
    points = {}
    for cell in master.cells:
        name = course_meta(cell).get("exercise")
        if role(cell) in ("answer", "hidden-test") and name:
            points[name] = points.get(name, 0) + (course_meta(cell).get("points", 0)
                                                  if role(cell) == "hidden-test" else 0)
    return points


def check_master(master, name="master"):
    """The conventions above; raises ValueError with every problem found."""
    problems = []
    for i, cell in enumerate(master.cells):
        r, meta = role(cell), course_meta(cell)
        try:
            _, _, secret = split_regions(cell.source, cell.cell_type)
        except ValueError as e:
            problems.append(f"cell {i}: {e}")
            continue
        if secret and r != "answer":
            problems.append(f"cell {i}: a solution region outside an `answer` cell")
        if r == "hidden-test" and not meta.get("exercise"):
            problems.append(f"cell {i}: a hidden test without metadata course.exercise")
        if r == "answer" and not answer_key(cell):
            problems.append(f"cell {i}: an answer cell without metadata course.exercise "
                            f"(or course.written)")
        if r == "hidden-test" and cell.cell_type != "code":
            problems.append(f"cell {i}: a hidden test must be a code cell")
        if "blocks" in meta and not (
                r == "hidden-test" and isinstance(meta["blocks"], dict) and meta["blocks"]
                and all(isinstance(name, str) and name.isidentifier() and isinstance(fs, list)
                        and fs and all(isinstance(f, str) and "." in f for f in fs)
                        for name, fs in meta["blocks"].items())):
            problems.append(f"cell {i}: course.blocks belongs on a hidden test, as "
                            f"{{\"student_function\": [\"module.function\", ...]}}")
    for exercise, points in exercises(master).items():
        if points <= 0:
            problems.append(f"exercise {exercise}: no hidden test with points")
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))


def _fresh(cell, source):
    new = copy.deepcopy(cell)
    new.source = source
    if new.cell_type == "code":
        new.outputs, new.execution_count = [], None
    new.metadata.pop("execution", None)
    new.metadata.get("jupyter", {}).pop("source_hidden", None)
    if not new.metadata.get("jupyter", True):
        new.metadata.pop("jupyter")
    return new


def make_handout(master, name):
    """What the student gets: no solution regions, no solution or hidden-test cells."""
    nb = copy.deepcopy(master)
    nb.cells = [_fresh(c, split_regions(c.source, c.cell_type)[0]) for c in master.cells
                if role(c) not in ("solution", "hidden-test")]
    nb.metadata["course"] = {"master": name, "version": "handout"}
    return nb


def make_solutions(master, name):
    """What the teacher gets: everything, with the reference solutions in place, run the way
    the grader runs them (graded_source), so that the build checks them under the same blocks."""
    nb = copy.deepcopy(master)
    blocks = exercise_blocks(master)
    nb.cells = [_fresh(c, graded_source(c, split_regions(c.source, c.cell_type)[1], blocks))
                for c in master.cells]
    nb.metadata["course"] = {"master": name, "version": "solutions"}
    return nb


# ------------------------------------------------------------------------- leak check
def _norm(text):
    return " ".join(text.split())


def _output_text(cell):
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append(out["text"] if isinstance(out["text"], str) else "".join(out["text"]))
        for key in ("text/plain", "text/markdown", "text/html"):
            value = out.get("data", {}).get(key)
            if value:
                parts.append(value if isinstance(value, str) else "".join(value))
        if out.get("output_type") == "error":
            parts.append(f"{out.get('ename')}: {out.get('evalue')}")
    return "\n".join(parts)


def secrets(master):
    """(solution lines, stated answers): what must never reach a handout."""
    visible = set()                       # lines a student sees anyway (setup, stubs, checks)
    hidden = []
    answers = []
    for cell in master.cells:
        handout_text, _, secret = split_regions(cell.source, cell.cell_type)
        if role(cell) in ("solution", "hidden-test"):
            hidden += cell.source.split("\n")
            answers += [str(a) for a in course_meta(cell).get("answers", [])]
        else:
            visible.update(line.strip() for line in handout_text.split("\n"))
            hidden += secret
    lines = {line.strip() for line in hidden}
    lines = {line for line in lines if len(line) >= SHORT_LINE and line not in visible
             and not line.startswith("#") and not MARKER.match(line)}
    return lines, answers


def leaks(master, handout):
    """Everything in a handout that gives a solution away; [] when it is clean."""
    lines, answers = secrets(master)
    found = []
    for i, cell in enumerate(handout.cells):
        where = f"cell {i}"
        if role(cell) in ("solution", "hidden-test"):
            found.append(f"{where}: a `{role(cell)}` cell")
        source, output = cell.source, _output_text(cell)
        if any(MARKER.match(line) for line in source.split("\n")):
            found.append(f"{where}: a solution marker line")
        for line in source.split("\n"):
            if line.strip() in lines:
                found.append(f"{where}: solution line {line.strip()!r}")
        for text, what in ((source, "source"), (output, "output")):
            for answer in answers:
                if _norm(answer) and _norm(answer) in _norm(text):
                    found.append(f"{where}: the answer {answer!r} in its {what}")
        if PASS.search(output):
            found.append(f"{where}: a self-check printed PASS in the saved output")
    return found


# ------------------------------------------------------- library calls an answer must not make
class BlockedCall(BaseException):
    """An answer called a library function that its exercise asks the student to implement.
    A BaseException, not an Exception, so that an answer's own `except Exception` (or a
    self-check's attempt()) cannot turn it into a wrong number with a misleading reason."""


_BLOCKED = {}                   # function -> [its own code, how many blocks hold it]
# The kernel imports this file by its name (kernel_env puts the repository on its path); not
# __name__, which is "__main__" when the build runs as `python course.py build`.
KERNEL_NAME = pathlib.Path(__file__).stem


def library_function(dotted):
    """'metrics.compute_eer' or 'heads.AAMSoftmax.logits' -> the function object."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):              # the longest prefix that is a module
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        break
    else:
        raise ValueError(f"{dotted!r} is not module.function or module.Class.method")
    if not isinstance(obj, types.FunctionType) or obj.__closure__:
        raise TypeError(f"{dotted}: only a plain Python function (no closure) can be blocked")
    return obj


def _raiser(message):
    """The code of a function that raises BlockedCall(message) whatever its arguments. It runs
    with the blocked function's globals, so it reaches BlockedCall through the module system."""
    namespace = {}
    exec(f"def blocked(*args, **kwargs):\n"
         f"    raise __import__({__name__!r}).BlockedCall({message!r})", namespace)
    return namespace["blocked"].__code__


@contextlib.contextmanager
def blocked(functions, caller):
    """Inside, every call of these library functions (dotted names) raises BlockedCall naming
    `caller`, by whatever name it is made. The functions' code is swapped, not a name:
    rebinding `metrics.compute_eer` would miss a `from metrics import compute_eer` in the
    student's namespace or in another library module, a default argument and a closure,
    while a swapped __code__ reaches them all, and stops the library's own callers of the
    function too (metrics.sv_metrics calls metrics.det_curve). Nested blocks of the same
    function are counted, so the original code comes back when the outermost one ends."""
    targets = [(name, library_function(name)) for name in functions]
    for name, fn in targets:
        entry = _BLOCKED.setdefault(fn, [fn.__code__, 0])
        if entry[1] == 0:
            fn.__code__ = _raiser(f"{caller} must not call {name} "
                                  f"(the exercise asks for an implementation)")
        entry[1] += 1
    try:
        yield
    finally:
        for _, fn in targets:
            entry = _BLOCKED[fn]
            entry[1] -= 1
            if entry[1] == 0:
                fn.__code__ = entry[0]
                del _BLOCKED[fn]


def _after_this_cell(undo):
    """Call undo() once the notebook cell that is running ends, whether it raised or not."""
    from IPython import get_ipython
    shell = get_ipython()

    def done(*_):
        shell.events.unregister("post_run_cell", done)
        undo()
    shell.events.register("post_run_cell", done)


def block_in_answer(functions, exercise):
    """The grader's first line in an answer cell: these library functions are off until the
    cell ends (an answer may compute its value right there, not only define a function)."""
    stack = contextlib.ExitStack()
    stack.enter_context(blocked(functions, f"the answer to {exercise}"))
    _after_this_cell(stack.close)


def block_in_hidden_test(namespace, blocks):
    """The grader's first line in a hidden test with blocks ({"my_eer": ["metrics.compute_eer",
    ...]}): until the cell ends, each named student function is replaced by a wrapper that runs
    it with those library functions off. The test's own calls of them (its oracle) are made
    outside the student's function, so they work."""
    wrappers = {}
    for name, functions in blocks.items():
        for dotted in functions:
            library_function(dotted)          # a typo in the master fails here, not in a call
        fn = namespace.get(name)
        if callable(fn):                      # not defined: the test fails on its own, NameError
            wrappers[name] = (fn, _run_blocked(fn, functions, name))
            namespace[name] = wrappers[name][1]

    def restore():
        for name, (fn, wrapper) in wrappers.items():
            if namespace.get(name) is wrapper:
                namespace[name] = fn
    _after_this_cell(restore)


def _run_blocked(fn, functions, name):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with blocked(functions, name):
            return fn(*args, **kwargs)
    return wrapper


def exercise_blocks(master):
    """{exercise: {student function: [library functions]}}: the hidden tests' course.blocks."""
    found = {}
    for cell in master.cells:
        meta = course_meta(cell)
        if role(cell) == "hidden-test" and meta.get("blocks"):
            for name, functions in meta["blocks"].items():
                found.setdefault(meta["exercise"], {}).setdefault(name, [])
                found[meta["exercise"]][name] += [f for f in functions
                                                  if f not in found[meta["exercise"]][name]]
    return found


def graded_source(cell, source, blocks):
    """What the grader (and the build, for the solutions) runs of a cell: an answer cell of an
    exercise with blocks, and a hidden test with blocks, get a first line that switches the
    library functions off. The line is visible in the executed notebook, on purpose."""
    meta = course_meta(cell)
    exercise = meta.get("exercise")
    if role(cell) == "answer" and exercise in blocks:
        functions = sorted({f for fs in blocks[exercise].values() for f in fs})
        line = f"__import__({KERNEL_NAME!r}).block_in_answer({functions!r}, {exercise!r})"
    elif role(cell) == "hidden-test" and meta.get("blocks"):
        line = f"__import__({KERNEL_NAME!r}).block_in_hidden_test(globals(), {dict(meta['blocks'])!r})"
    else:
        return source
    line += "  # the grader: library functions this exercise asks to implement are off"
    head, _, rest = source.partition("\n")
    if head.startswith("%%"):                  # a cell magic must stay the first line
        return f"{head}\n{line}\n{rest}"
    return f"{line}\n{source}"


# -------------------------------------------------------------------------- execution
def kernel_env():
    """The kernel imports the library from the repository wherever it runs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def execute(nb, cwd, timeout=SETUP_TIMEOUT_S):
    """Run a whole notebook in place (build); raises with the failing cell's source."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute(env=kernel_env())
    except CellExecutionError as e:
        raise RuntimeError(f"a cell failed:\n{str(e)[-3000:]}") from None
    return nb


def master_paths(selection=(), masters_dir=MASTERS):
    paths = sorted(pathlib.Path(masters_dir).glob("*.ipynb"))
    if selection:
        paths = [p for p in paths if any(p.stem.startswith(s) for s in selection)]
    return paths


def build(selection=(), solutions=True, masters_dir=MASTERS, out_dir=NOTEBOOKS,
          solutions_dir=SOLUTIONS, log=print):
    """Masters -> executed handouts in out_dir and executed solutions in solutions_dir.
    Both run with notebooks/ as working directory, the way a student opens them."""
    paths = master_paths(selection, masters_dir)
    if not paths:
        raise SystemExit(f"no master matches {list(selection)} in {masters_dir}")
    for path in paths:
        master = nbformat.read(str(path), as_version=4)
        check_master(master, path.name)
        t0 = time.time()
        handout = execute(make_handout(master, path.stem), NOTEBOOKS)
        problems = leaks(master, handout)
        if problems:
            raise RuntimeError(f"{path.name}: the handout gives solutions away:\n  "
                               + "\n  ".join(problems))
        nbformat.write(handout, str(pathlib.Path(out_dir) / path.name))
        log(f"{path.name}: handout written ({time.time() - t0:.0f} s)")
        if solutions:
            t0 = time.time()
            os.makedirs(solutions_dir, exist_ok=True)
            nbformat.write(execute(make_solutions(master, path.stem), NOTEBOOKS),
                           str(pathlib.Path(solutions_dir) / path.name))
            log(f"{path.name}: solutions written, every hidden test passes "
                f"({time.time() - t0:.0f} s)")


# ---------------------------------------------------------------------------- grading
def _error_of(cell):
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", "Error"), str(out.get("evalue", ""))
    return None


def _short(text, limit=200):
    text = _norm(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def grading_notebook(master, submission, name):
    """The master with the student's answer cells in place of the reference ones.
    Returns (notebook, {exercise: reason it already scores 0})."""
    handout = make_handout(master, name)
    stubs = {}
    for cell in handout.cells:
        if role(cell) == "answer":
            stubs.setdefault(answer_key(cell), []).append(cell.source)
    theirs = {}
    for cell in submission.cells:
        if role(cell) == "answer" and answer_key(cell):
            theirs.setdefault(answer_key(cell), []).append(cell)
    zero, seen, cells = {}, {}, []
    blocks = exercise_blocks(master)
    for cell in master.cells:
        r = role(cell)
        if r == "solution":
            continue
        if r != "answer":
            cells.append(_fresh(cell, graded_source(cell, cell.source, blocks)))
            continue
        key = answer_key(cell)
        exercise = course_meta(cell).get("exercise")          # None for a written answer
        k = seen[key] = seen.get(key, -1) + 1
        stub = stubs[key][k]
        submitted = theirs.get(key, [])
        if k < len(submitted):
            source = submitted[k].source
            if exercise and _norm(source) == _norm(stub):
                zero.setdefault(exercise, "not answered (the cell is as handed out)")
        else:
            source = stub
            if exercise:
                zero.setdefault(exercise, "answer cell missing from the submission "
                                          "(deleted or untagged?)")
        cells.append(_fresh(cell, graded_source(cell, source, blocks)))
    nb = copy.deepcopy(master)
    nb.cells = cells
    return nb, zero


def _kill(client):
    """Kill the kernel process of a client (the watchdog of grade_notebook)."""
    process = getattr(getattr(client.km, "provisioner", None), "process", None)
    if process is not None and process.poll() is None:
        process.kill()


def grade_notebook(master, submission, name, cell_timeout=CELL_TIMEOUT_S,
                   setup_timeout=SETUP_TIMEOUT_S, workdir=None):
    """Run one submission; returns ({exercise: (points, reason)}, notes, executed notebook)."""
    points = exercises(master)
    nb, zero = grading_notebook(master, submission, name)
    passed = {e: 0 for e in points}
    failed = dict(zero)
    notes = []
    workdir = workdir or tempfile.mkdtemp(prefix="grade_")
    client = NotebookClient(nb, timeout=setup_timeout, kernel_name="python3", allow_errors=True,
                            interrupt_on_timeout=True, record_timing=False,
                            resources={"metadata": {"path": str(workdir)}})
    dead, current = None, None
    last_test = {course_meta(c).get("exercise"): i for i, c in enumerate(nb.cells)
                 if role(c) == "hidden-test"}
    with client.setup_kernel(env=kernel_env()):
        for index, cell in enumerate(nb.cells):
            r, meta = role(cell), course_meta(cell)
            exercise = meta.get("exercise")
            if r == "answer" and exercise:
                current = exercise          # the cells up to its last hidden test belong to it
            elif current and index > last_test.get(current, -1):
                current = None
            if cell.cell_type != "code":
                continue
            if dead:
                if exercise:
                    failed.setdefault(exercise, dead)
                continue
            theirs = r in ("answer", "hidden-test")         # cells that run the student's code
            limit = meta.get("timeout", cell_timeout if theirs else setup_timeout)
            client.timeout = limit
            # At the limit nbclient interrupts the kernel. Code that swallows the interrupt
            # (a bare `except:` in a loop) would keep it busy for ever: kill it a little later.
            watchdog = threading.Timer(limit + KILL_GRACE_S, _kill, [client])
            watchdog.start()
            t0 = time.time()
            try:
                client.execute_cell(cell, index)
            except (DeadKernelError, CellTimeoutError, RuntimeError):
                # The kernel is gone (it crashed, or ignored the interrupt and was killed):
                # nothing after this runs.
                what = "died" if time.time() - t0 < limit else \
                    f"ignored the interrupt after {limit} s and was killed"
                dead = f"the kernel {what} in cell {index}" + (
                    f" (exercise {exercise})" if exercise else "")
                if exercise:
                    failed.setdefault(exercise, dead)
                else:
                    notes.append(dead)
                continue
            finally:
                watchdog.cancel()
            error = _error_of(cell)
            if error and error[0] == "KeyboardInterrupt" and time.time() - t0 >= limit - 1:
                error = ("TimeoutError", f"ran longer than {limit} s and was interrupted")
            if not error:
                if r == "hidden-test":
                    passed[exercise] += meta.get("points", 0)
                continue
            message = f"{error[0]}: {_short(error[1])}" if error[1] else error[0]
            if r == "answer":
                failed.setdefault(exercise, f"the answer cell raised {message}"
                                  if error[0] != "TimeoutError" else f"the answer cell {error[1]}")
            elif r == "hidden-test":
                failed.setdefault(exercise, f"a hidden test failed: {message}")
            elif current:                   # its self-check could not even run on the answer
                failed.setdefault(current, f"the self-check (cell {index}) raised {message}")
            else:
                notes.append(f"cell {index} (not an answer) raised {message}")
    result = {e: (0, failed[e]) if e in failed else (passed[e], "") for e in points}
    return result, notes, nb


def find_master(path, nb, masters):
    """Which master a submission answers: the handout's metadata, else its file name."""
    name = (nb.metadata.get("course", {}) if nb is not None else {}).get("master")
    if name in masters:
        return name
    for candidate in sorted(masters, key=len, reverse=True):
        if candidate in path.stem or path.stem.startswith(candidate.split("_")[0] + "_"):
            return candidate
    return None


def submissions(folder):
    """[(student, path)]: folder/<student>/*.ipynb, or folder/<student>.ipynb."""
    folder = pathlib.Path(folder)
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            found += [(entry.name, p) for p in sorted(entry.glob("*.ipynb"))]
        elif entry.suffix == ".ipynb":
            found.append((entry.stem, entry))
    return found


def grade_file(path, masters, forced=None, cell_timeout=CELL_TIMEOUT_S,
               setup_timeout=SETUP_TIMEOUT_S, graded_dir=None, student="", log=print):
    """Grade one submitted file. Returns (master name or None, {column: (points, reason)},
    notes). A file that is no notebook, or that the grader cannot run, scores 0 with why."""
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as e:                      # not JSON, not a notebook, unreadable
        nb = None
        error = f"{path.name} is not a readable notebook ({type(e).__name__}: {_short(str(e), 120)})"
    else:
        error = None
    name = forced or find_master(path, nb, masters)
    if name is None:
        return None, {}, [f"{path.name}: no master matches this file; not graded"]
    points = exercises(masters[name])
    prefix = name.split("_")[0]
    if error:
        log(f"{student} / {path.name}: {error}")
        return name, {f"{prefix}:{e}": (0, error) for e in points}, []
    t0 = time.time()
    try:
        result, notes, executed = grade_notebook(masters[name], nb, name, cell_timeout, setup_timeout)
    except Exception as e:               # the grader itself: never lose the class's grades
        why = f"could not be graded ({type(e).__name__}: {_short(str(e), 120)})"
        result, notes, executed = {x: (0, why) for x in points}, [], None
    if graded_dir and executed is not None:
        target = pathlib.Path(graded_dir) / student
        target.mkdir(parents=True, exist_ok=True)
        nbformat.write(executed, str(target / f"{name}.ipynb"))
    got = sum(p for p, _ in result.values())
    log(f"{student} / {path.name}: {got} of {sum(points.values())} points ({time.time() - t0:.0f} s)")
    return name, {f"{prefix}:{e}": v for e, v in result.items()}, [f"{prefix}: {n}" for n in notes]


def grade_rows(results, columns):
    """One CSV row per student: a column per exercise of every master graded, the total, and
    the reasons for lost points (one reason for a whole notebook when all its exercises share it)."""
    header = [f"{name.split('_')[0]}:{e}" for name in sorted(columns) for e in columns[name]]
    maximum = sum(p for name in columns for p in columns[name].values())
    rows = []
    for student in sorted(results):
        row = results[student]
        out = {"student": student}
        reasons = []
        for name in sorted(columns):
            prefix = name.split("_")[0]
            cells = [f"{prefix}:{e}" for e in columns[name]]
            values = [row.get(c, (0, "not submitted")) for c in cells]
            for column, (value, _) in zip(cells, values):
                out[column] = value
            why = [reason for _, reason in values]
            if len(why) > 1 and all(w == why[0] for w in why) and why[0]:
                reasons.append(f"{prefix}: {why[0]}")            # e.g. an unreadable file
            else:
                reasons += [f"{c}: {w}" for c, w in zip(cells, why) if w]
        out["total"] = sum(out[c] for c in header)
        out["max"] = maximum
        out["reasons"] = "; ".join(reasons + row["notes"])
        rows.append(out)
    return header, rows


def grade(folder, out_csv, master_names=(), cell_timeout=CELL_TIMEOUT_S,
          setup_timeout=SETUP_TIMEOUT_S, graded_dir=None, masters_dir=MASTERS, log=print):
    """Grade every submission in folder; write one CSV row per student. Returns the rows."""
    masters = {p.stem: nbformat.read(str(p), as_version=4) for p in master_paths((), masters_dir)}
    for name, master in masters.items():
        check_master(master, name)
    forced = [m for m in masters if any(m.startswith(s) for s in master_names)]
    if master_names and len(forced) != 1:
        raise SystemExit(f"--master {list(master_names)} matches {forced}; name exactly one")
    results, columns = {}, {}
    for student, path in submissions(folder):
        row = results.setdefault(student, {"notes": []})
        name, marks, notes = grade_file(path, masters, forced[0] if forced else None,
                                        cell_timeout, setup_timeout, graded_dir, student, log)
        if name is not None:
            columns[name] = exercises(masters[name])
        row.update(marks)
        row["notes"] += notes
    header, rows = grade_rows(results, columns)
    with open(out_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["student", *header, "total", "max", "reasons"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


# -------------------------------------------------------------------------------- CLI
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="masters -> handouts (notebooks/) and solutions "
                                     "(notebooks/solutions/)")
    b.add_argument("masters", nargs="*", help="name prefixes, e.g. 01 07 (default: all)")
    b.add_argument("--no-solutions", action="store_true", help="write the handouts only")
    g = sub.add_parser("grade", help="grade a folder of submissions into a CSV")
    g.add_argument("folder", help="<folder>/<student>/<notebook>.ipynb or <folder>/<student>.ipynb")
    g.add_argument("--out", default="grades.csv")
    g.add_argument("--master", action="append", default=[],
                   help="grade every file against this master (a name prefix, e.g. 01)")
    g.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT_S,
                   help="seconds an answer or hidden-test cell may run")
    g.add_argument("--setup-timeout", type=int, default=SETUP_TIMEOUT_S,
                   help="seconds any other cell of the master may run")
    g.add_argument("--graded",
                   help="also save each executed grading notebook here (to read written answers)")
    args = p.parse_args(argv)
    if args.command == "build":
        build(args.masters, solutions=not args.no_solutions)
    else:
        rows = grade(args.folder, args.out, args.master, args.cell_timeout, args.setup_timeout,
                     args.graded)
        print(f"{len(rows)} students graded; wrote {args.out}")


if __name__ == "__main__":
    main()
