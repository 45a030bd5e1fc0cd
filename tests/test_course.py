"""The course tooling (course.py): handouts give nothing away, and grading is honest.

The committed notebooks in notebooks/ are the handouts. They must be what the masters in
notebooks/masters/ generate, and the leak check must find every planted solution, answer
or PASS. The grader runs the real master of notebook 01 on fake submissions: the
solutions (full marks), the untouched handout (0 everywhere), one with a wrong answer,
an infinite loop, an exception and a forged PASS, and a file that is not a notebook.
"""
import copy
import csv

import nbformat
import pytest

import course

MASTERS = sorted(course.MASTERS.glob("*.ipynb"))
EXPENSIVE = ("04", "06", "07")    # minutes of training each: `course.py build` checks those


def read(path):
    return nbformat.read(str(path), as_version=4)


# ------------------------------------------------------------------ the marker syntax
def test_split_regions_gives_stub_to_students_and_solution_to_teachers():
    text = ("def f(x):\n    # BEGIN SOLUTION\n    return 2 * x\n    # STUB\n    return None\n"
            "    # END SOLUTION\n")
    handout, solution, secret = course.split_regions(text)
    assert handout == "def f(x):\n    return None\n"
    assert solution == "def f(x):\n    return 2 * x\n"
    assert secret == ["    return 2 * x"]
    # Without a stub, the student gets a body that still runs.
    handout, _, _ = course.split_regions(
        "def f(x):\n    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION")
    assert handout == "def f(x):\n    ...  # YOUR CODE HERE"
    handout, solution, _ = course.split_regions(
        "Answer:\n<!-- BEGIN SOLUTION -->\nforty-two\n<!-- STUB -->\n*Your answer.*\n"
        "<!-- END SOLUTION -->", "markdown")
    assert "forty-two" in solution and "forty-two" not in handout and "*Your answer.*" in handout


@pytest.mark.parametrize("text", ["# BEGIN SOLUTION\nx = 1", "x = 1\n# END SOLUTION",
                                  "# STUB\nx = 1",
                                  "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION"])
def test_split_regions_rejects_unbalanced_markers(text):
    with pytest.raises(ValueError):
        course.split_regions(text)


# -------------------------------------------------------------------- the handouts
@pytest.mark.parametrize("path", MASTERS, ids=lambda p: p.name)
def test_master_follows_the_conventions_and_is_saved_without_outputs(path):
    master = read(path)
    course.check_master(master, path.name)
    assert course.exercises(master), f"{path.name} has no graded exercise"
    for cell in master.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} is saved with outputs; clear them: "
                f"jupyter nbconvert --clear-output --inplace notebooks/masters/{path.name}")


def test_every_notebook_is_a_handout_of_a_master():
    """A notebook added to notebooks/ directly would carry its solutions to the students."""
    orphans = [p.name for p in sorted(course.NOTEBOOKS.glob("*.ipynb"))
               if not (course.MASTERS / p.name).exists()]
    assert orphans == [], (f"{orphans} have no master: move them to notebooks/masters/, mark the "
                           f"solutions (notebooks/TEACHING.md, For teachers) and run "
                           f"`python course.py build`")


@pytest.mark.parametrize("path", MASTERS, ids=lambda p: p.name)
def test_committed_handout_is_generated_from_its_master_and_gives_nothing_away(path):
    """The handout in notebooks/ has exactly the cells the master generates (so nobody
    edited it by hand or forgot to rebuild), and no solution code, no solution output,
    no stated answer and no PASS, in its sources or in its saved outputs."""
    master = read(path)
    committed = read(course.NOTEBOOKS / path.name)
    expected = course.make_handout(master, path.stem)
    cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]
    assert cells(committed) == cells(expected), (
        f"notebooks/{path.name} is not what its master generates; "
        f"run `python course.py build {path.stem[:2]}`")
    assert committed.metadata.get("course", {}).get("master") == path.stem
    assert course.leaks(master, committed) == []
    for cell in committed.cells:
        assert course.role(cell) not in ("solution", "hidden-test")


@pytest.mark.parametrize("path", MASTERS, ids=lambda p: p.name)
def test_leak_check_finds_every_planted_solution(path):
    """Plant, one at a time, each way a solution can reach a handout; each must be found."""
    master = read(path)
    clean = read(course.NOTEBOOKS / path.name)
    lines, answers = course.secrets(master)
    assert lines, f"{path.name}: no solution line to police"
    markdown = next(i for i, c in enumerate(clean.cells) if c.cell_type == "markdown")
    code = next(i for i, c in enumerate(clean.cells) if c.cell_type == "code" and c.outputs)

    def planted(change):
        nb = copy.deepcopy(clean)
        change(nb)
        return course.leaks(master, nb)

    # every reference solution line, pasted into the answer cell it belongs to
    for cell_index, cell in enumerate(master.cells):
        if course.role(cell) != "answer":
            continue
        _, _, secret = course.split_regions(cell.source, cell.cell_type)
        target = next(i for i, c in enumerate(clean.cells) if course.role(c) == "answer"
                      and course.answer_key(c) == course.answer_key(cell))
        for line in (s for s in secret if s.strip() in lines):
            found = planted(lambda nb: setattr(nb.cells[target], "source",
                                               nb.cells[target].source + "\n" + line))
            assert any("solution line" in f for f in found), \
                f"{path.name}: planted {line.strip()!r} not found"
    # every stated answer, in a markdown cell and in an output
    for answer in answers:
        assert planted(lambda nb: setattr(nb.cells[markdown], "source",
                                          nb.cells[markdown].source + f" ({answer})"))
        out = nbformat.v4.new_output("stream", name="stdout", text=f"the answer is {answer}\n")
        assert planted(lambda nb: nb.cells[code].outputs.append(out))
    # a self-check that printed PASS, a solution cell, a hidden test, a leftover marker
    passed = nbformat.v4.new_output("stream", name="stdout", text="Exercise 1: PASS\n")
    assert any("PASS" in f for f in planted(lambda nb: nb.cells[code].outputs.append(passed)))
    for r in ("solution", "hidden-test"):
        extra = copy.deepcopy(next(c for c in master.cells if course.role(c) == r)) if any(
            course.role(c) == r for c in master.cells) else None
        if extra is not None:
            assert planted(lambda nb: nb.cells.append(extra))
    assert planted(lambda nb: setattr(nb.cells[markdown], "source",
                                      "<!-- BEGIN SOLUTION -->\n" + nb.cells[markdown].source))


# ----------------------------------------------------------------------- building
def new_master(cells):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = cells
    return nb


def cell(make, source, tags=(), **meta):
    c = make(source)
    if tags:
        c.metadata["tags"] = list(tags)
    if meta:
        c.metadata["course"] = meta
    return c


def tiny_master(hidden_ok=True, text_answer=False):
    """A two-exercise master that runs in a second."""
    new = nbformat.v4
    return new_master([
        cell(new.new_markdown_cell, "# A tiny course" + (" (the answer is 42)" if text_answer
                                                          else "")),
        cell(new.new_code_cell, "import math"),
        cell(new.new_code_cell, "def double(x):\n    # BEGIN SOLUTION\n    return x + x\n"
                                "    # STUB\n    return None    # YOUR CODE HERE\n"
                                "    # END SOLUTION",
             ("answer",), exercise="ex1"),
        cell(new.new_code_cell, "print('Exercise 1:', 'PASS' if double(2) == 4 else 'FAIL')"),
        cell(new.new_code_cell, "assert double(21) == 42, 'double(21) is not 42'" if hidden_ok
             else "assert False, 'broken'", ("hidden-test",), exercise="ex1", points=2),
        cell(new.new_code_cell,
             "# BEGIN SOLUTION\nanswer = 42\n# STUB\nanswer = None\n# END SOLUTION",
             ("answer",), exercise="ex2"),
        cell(new.new_code_cell, "assert answer == 42", ("hidden-test",), exercise="ex2", points=1,
             answers=["42"]),
        cell(new.new_markdown_cell,
             "Why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->",
             ("answer",), written="why"),
        cell(new.new_markdown_cell, "Notes: `double` adds x to itself.", ("solution",)),
    ])


def test_build_writes_a_clean_handout_and_checked_solutions(tmp_path):
    masters, out, sol = tmp_path / "masters", tmp_path / "out", tmp_path / "sol"
    for d in (masters, out, sol):
        d.mkdir()
    nbformat.write(tiny_master(), str(masters / "90_tiny.ipynb"))
    course.build(masters_dir=masters, out_dir=out, solutions_dir=sol, log=lambda *a: None)
    handout, solutions = read(out / "90_tiny.ipynb"), read(sol / "90_tiny.ipynb")
    printed = lambda nb: "".join(course._output_text(c) for c in nb.cells)
    assert "x + x" not in str(handout.cells) and printed(handout) == "Exercise 1: FAIL\n"
    assert "x + x" in str(solutions.cells) and printed(solutions) == "Exercise 1: PASS\n"
    assert "Because." not in str(handout.cells) and "Because." in str(solutions.cells)
    counts = [c.execution_count for c in handout.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))


def test_build_refuses_a_handout_that_states_an_answer_or_solutions_that_fail(tmp_path):
    (tmp_path / "masters").mkdir()
    path = tmp_path / "masters" / "90_tiny.ipynb"
    nbformat.write(tiny_master(text_answer=True), str(path))
    quiet = dict(masters_dir=tmp_path / "masters", out_dir=tmp_path, solutions_dir=tmp_path,
                 log=lambda *a: None)
    with pytest.raises(RuntimeError, match="gives solutions away"):
        course.build(**quiet)
    nbformat.write(tiny_master(hidden_ok=False), str(path))
    with pytest.raises(RuntimeError, match="broken"):
        course.build(**quiet)


# ------------------------------------------------------------------------ grading
def read_csv(path):
    with open(path, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.mark.slow                # kernels: about 15 s
def test_grading_a_tiny_master_reads_answers_only_from_answer_cells(tmp_path, monkeypatch):
    masters, subs = tmp_path / "masters", tmp_path / "subs"
    masters.mkdir(), subs.mkdir()
    master = tiny_master()
    nbformat.write(master, str(masters / "90_tiny.ipynb"))
    handout = course.make_handout(master, "90_tiny")
    forged = copy.deepcopy(handout)      # prints PASS itself and deletes the answer of ex2
    forged.cells[3].source = "print('Exercise 1: PASS')"
    forged.cells = [c for c in forged.cells if course.answer_key(c) != "ex2"]
    nbformat.write(forged, str(subs / "forger.ipynb"))
    nbformat.write(course.make_solutions(master, "90_tiny"), str(subs / "good.ipynb"))
    stubborn = course.make_solutions(master, "90_tiny")   # swallows the interrupt: must be killed
    next(c for c in stubborn.cells if course.answer_key(c) == "ex1").source = (
        "import time\nwhile True:\n    try:\n        time.sleep(0.1)\n"
        "    except BaseException:\n        pass")
    nbformat.write(stubborn, str(subs / "stubborn.ipynb"))
    (subs / "broken.ipynb").write_text('{"cells": [')
    monkeypatch.setattr(course, "KILL_GRACE_S", 2)
    course.grade(subs, tmp_path / "grades.csv", ["90"], cell_timeout=5, masters_dir=masters,
                 log=lambda *a: None)
    rows = read_csv(tmp_path / "grades.csv")
    good = rows["good"]
    assert (good["90:ex1"], good["90:ex2"], good["total"], good["max"]) == ("2", "1", "3", "3")
    assert rows["forger"]["total"] == "0"
    assert "not answered" in rows["forger"]["reasons"] and "missing" in rows["forger"]["reasons"]
    assert rows["stubborn"]["total"] == "0"
    assert "ignored the interrupt after 5 s and was killed" in rows["stubborn"]["reasons"]
    assert rows["broken"]["total"] == "0" and "not a readable notebook" in rows["broken"]["reasons"]


@pytest.mark.slow
def test_grading_notebook_01_three_submissions(tmp_path):
    """The real master 01, a short time limit per answer cell: the reference solutions
    get full marks; the handout as committed gets 0 on every exercise; a submission
    with a wrong answer (ex1), an infinite loop (ex2), an exception (ex3), a forged PASS
    and a disarmed hidden test gets 0 with a reason on those three and full marks on
    ex4. A file that is not a notebook gets 0 everywhere, with the reason."""
    master_path = course.MASTERS / "01_hard_concrete.ipynb"
    master = read(master_path)
    subs = tmp_path / "submissions"
    for student in ("alice", "bob", "carol", "dave"):
        (subs / student).mkdir(parents=True)
    name = master_path.name
    nbformat.write(course.make_solutions(master, master_path.stem), str(subs / "alice" / name))
    (subs / "bob" / name).write_bytes((course.NOTEBOOKS / name).read_bytes())
    carol = course.make_solutions(master, master_path.stem)
    for cell in carol.cells:
        key = course.answer_key(cell) if course.role(cell) == "answer" else None
        if key == "ex1":
            cell.source = ("def my_prob_one(log_alpha):\n"
                           "    return torch.sigmoid(log_alpha - 1.6)   # close, not exact")
        elif key == "ex2":
            cell.source = "while True:\n    pass"
        elif key == "ex3":
            cell.source = "raise ValueError('no idea')"
        elif course.role(cell) == "hidden-test":
            cell.source = "pass"                         # ignored: the grader uses the master's
        elif "check_prob_one(my_prob_one);" in cell.source:
            cell.source = "print('Exercise 1: PASS')"               # ignored too
    nbformat.write(carol, str(subs / "carol" / master_path.name))
    (subs / "dave" / master_path.name).write_text("this is not JSON")

    out = tmp_path / "grades.csv"
    course.grade(subs, out, cell_timeout=20, log=lambda *a: None)
    rows = read_csv(out)
    points = course.exercises(master)
    columns = [f"01:{e}" for e in points]
    full = sum(points.values())
    assert [int(rows["alice"][c]) for c in columns] == list(points.values())
    assert int(rows["alice"]["total"]) == int(rows["alice"]["max"]) == full
    assert rows["alice"]["reasons"] == ""
    assert [int(rows["bob"][c]) for c in columns] == [0] * len(columns)
    assert rows["bob"]["reasons"] == "01: not answered (the cell is as handed out)"   # one for all
    assert [int(rows["carol"][c]) for c in columns] == [0, 0, 0, points["ex4"]]
    reasons = rows["carol"]["reasons"]
    assert "01:ex1: a hidden test failed" in reasons
    assert "01:ex2: the answer cell ran longer than 20 s" in reasons
    assert "01:ex3: the answer cell raised ValueError: no idea" in reasons
    assert int(rows["dave"]["total"]) == 0 and "not a readable notebook" in rows["dave"]["reasons"]


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in MASTERS if not p.name.startswith(EXPENSIVE)
                                  and not p.name.startswith("01")], ids=lambda p: p.name)
def test_reference_solutions_pass_every_hidden_test(path):
    """What `course.py build` checks, for the masters that run in seconds (01 is graded
    above; the training notebooks are left to the build)."""
    course.execute(course.make_solutions(read(path), path.stem), course.NOTEBOOKS)


# ------------------------------------------- library calls an implementation must not make
def test_a_blocked_library_function_raises_by_every_name_and_comes_back():
    """course.blocked swaps the function's code, so an alias bound before the block, the
    library's own callers and a nested block are all covered; afterwards all work again."""
    import metrics
    from metrics import compute_eer as alias
    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    truth = metrics.compute_eer(scores, labels)
    with course.blocked(["metrics.compute_eer", "metrics.det_curve"], "my_eer"):
        for call, name in ((metrics.compute_eer, "compute_eer"), (alias, "compute_eer"),
                           (metrics.sv_metrics, "det_curve")):       # sv_metrics -> det_curve
            with pytest.raises(course.BlockedCall, match=f"^my_eer must not call metrics.{name} "
                                                         r"\(the exercise asks for an implementation\)"):
                call(scores, labels)
        with course.blocked(["metrics.compute_eer"], "inner"):
            pass
        with pytest.raises(course.BlockedCall, match="my_eer must not call"):  # the outer still holds
            alias(scores, labels)
        assert metrics.compute_cllr([1.0, -1.0], [1, 0]) > 0        # what is not listed works
    assert metrics.compute_eer(scores, labels) == alias(scores, labels) == truth
    assert metrics.sv_metrics(scores, labels)["eer"] == truth[0]
    for wrong in ("metrics", "metrics.no_such_function", "nomodule.f"):
        with pytest.raises((ValueError, AttributeError)):
            course.library_function(wrong)


def blocking_master():
    """One exercise that asks for an implementation of metrics.compute_cllr, and a hidden test
    whose oracle calls that same function."""
    new = nbformat.v4
    return new_master([
        cell(new.new_code_cell, "import numpy as np\nimport metrics"),
        cell(new.new_code_cell,
             "def my_cllr(llr, labels):\n    # BEGIN SOLUTION\n"
             "    s, y = np.asarray(llr, float), np.asarray(labels).astype(bool)\n"
             "    return (np.logaddexp(0, -s[y]).mean() + np.logaddexp(0, s[~y]).mean()) / (2 * np.log(2))\n"
             "    # STUB\n    return None\n    # END SOLUTION", ("answer",), exercise="ex1"),
        cell(new.new_code_cell,
             "llr, y = [2.0, -1.0, 0.5, -3.0], [1, 0, 1, 0]\n"
             "assert abs(my_cllr(llr, y) - metrics.compute_cllr(llr, y)) < 1e-12",
             ("hidden-test",), exercise="ex1", points=2, blocks={"my_cllr": ["metrics.compute_cllr"]}),
        cell(new.new_code_cell, "assert metrics.compute_cllr([1.0, -1.0], [1, 0]) > 0  # on again"),
    ])


@pytest.mark.slow
def test_grading_runs_an_implementation_with_the_library_function_it_replaces_switched_off(tmp_path):
    masters, subs = tmp_path / "masters", tmp_path / "subs"
    masters.mkdir(), subs.mkdir()
    master = blocking_master()
    nbformat.write(master, str(masters / "91_block.ipynb"))
    nbformat.write(course.make_solutions(master, "91_block"), str(subs / "own.ipynb"))
    for student, answer in (
            ("caller", "from metrics import compute_cllr\n\n"        # called inside the function
                       "def my_cllr(llr, labels):\n    return compute_cllr(llr, labels)"),
            ("eager", "value = metrics.compute_cllr([2.0, -1.0, 0.5, -3.0], [1, 0, 1, 0])\n\n"
                      "def my_cllr(llr, labels):\n    return value")):     # called in the cell
        nb = course.make_handout(master, "91_block")
        next(c for c in nb.cells if course.role(c) == "answer").source = answer
        nbformat.write(nb, str(subs / f"{student}.ipynb"))
    course.grade(subs, tmp_path / "grades.csv", ["91"], cell_timeout=30, masters_dir=masters,
                 log=lambda *a: None)
    rows = read_csv(tmp_path / "grades.csv")
    # The own implementation passes: the oracle in the hidden test still reaches the library,
    # and the cell after the hidden test finds the function switched on again.
    assert (rows["own"]["91:ex1"], rows["own"]["reasons"]) == ("2", "")
    assert rows["caller"]["91:ex1"] == "0"
    assert rows["caller"]["reasons"] == (
        "91:ex1: a hidden test failed: BlockedCall: my_cllr must not call metrics.compute_cllr "
        "(the exercise asks for an implementation)")
    assert rows["eager"]["91:ex1"] == "0"
    assert "answer cell raised BlockedCall: the answer to ex1 must not call metrics.compute_cllr" \
        in rows["eager"]["reasons"]


@pytest.mark.slow
def test_grading_notebook_03_follows_the_text_and_not_the_library(tmp_path):
    """The real master 03, one submission: its AAM-softmax target logit follows the exercise
    text word for word (the fallback only where theta + m > pi, strictly), and its EER and
    minDCF just call the library's metrics (once by module, once by a name imported from it).
    The first scores full points; the other two score 0, with the blocked function named."""
    master_path = course.MASTERS / "03_heads_and_metrics.ipynb"
    master = read(master_path)
    submission = course.make_solutions(master, master_path.stem)
    answers = {
        "ex1": "def my_eer(scores, labels):\n    return metrics.compute_eer(scores, labels)[0]",
        "ex2": "from metrics import compute_min_dcf\n\n"
               "def my_min_dcf(scores, labels, p_target, c_miss, c_fa):\n"
               "    return compute_min_dcf(scores, labels, p_target, c_miss, c_fa)[0]",
        "ex4": "def my_target_logit(cos_theta, m, s):\n"
               "    sin_theta = torch.sqrt((1 - cos_theta ** 2).clamp_min(0))\n"
               "    phi = cos_theta * math.cos(m) - sin_theta * math.sin(m)\n"
               "    beyond = cos_theta < math.cos(math.pi - m)          # theta + m > pi, as the text says\n"
               "    return s * torch.where(beyond, cos_theta - m * math.sin(m), phi)"}
    for c in submission.cells:
        if course.role(c) == "answer" and course.answer_key(c) in answers:
            c.source = answers[course.answer_key(c)]
    (tmp_path / "subs").mkdir()
    nbformat.write(submission, str(tmp_path / "subs" / "text.ipynb"))
    course.grade(tmp_path / "subs", tmp_path / "grades.csv", ["03"], log=lambda *a: None)
    row = read_csv(tmp_path / "grades.csv")["text"]
    points = course.exercises(master)
    assert {e: int(row[f"03:{e}"]) for e in points} == dict(points, ex1=0, ex2=0)
    assert row["reasons"] == (
        "03:ex1: a hidden test failed: BlockedCall: my_eer must not call metrics.compute_eer "
        "(the exercise asks for an implementation); "
        "03:ex2: a hidden test failed: BlockedCall: my_min_dcf must not call "
        "metrics.compute_min_dcf (the exercise asks for an implementation)")
