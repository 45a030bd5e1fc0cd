"""Every course notebook must run top to bottom and be committed with its outputs.

The notebooks are executed in memory (the files on disk are not touched) with the
notebooks/ folder as working directory, the way a student opens them. New notebooks
are picked up automatically by the glob. They are the student handouts that
`python course.py build` generates from notebooks/masters/ (tests/test_course.py checks
that they match); the masters and the solutions in subfolders are not globbed here.
"""
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300          # per cell; every notebook as a whole runs in well under that on a CPU
MAX_OUTPUT_BYTES = 2_000_000  # the saved file stays small: figures at modest dpi, no long logs
ANSI = re.compile(r"\x1b\[[0-9;]*m")   # colour codes in IPython tracebacks


def _source(cell, limit=3000):
    text = cell.source
    return text if len(text) <= limit else text[:limit] + "\n... (truncated)"


def _first_error(nb):
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return index, cell, out
    return None, None, None


@pytest.mark.slow
@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in notebooks/")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path):
    nb = nbformat.read(str(path), as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    try:
        client.execute()
    except CellExecutionError as e:
        index, cell, out = _first_error(nb)
        if cell is None:
            pytest.fail(f"{path.name}: a cell failed:\n{e}", pytrace=False)
        traceback = ANSI.sub("", "\n".join(out.get("traceback", [])))
        pytest.fail(f"{path.name}: cell {index} raised {out.get('ename')}: {out.get('evalue')}\n"
                    f"--- cell source ---\n{_source(cell)}\n--- traceback ---\n{traceback}", pytrace=False)
    except CellTimeoutError as e:
        pytest.fail(f"{path.name}: a cell ran longer than {CELL_TIMEOUT_S} s: {e}", pytrace=False)
    except DeadKernelError as e:
        pytest.fail(f"{path.name}: the kernel died (out of memory?): {e}", pytrace=False)


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in notebooks/")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_executed_with_small_outputs(path):
    """Readers see the notebooks on a code-hosting site without running them: the saved
    file must hold the outputs of one clean top-to-bottom run, without errors."""
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name} is not saved from one clean top-to-bottom run (execution counts {counts}); "
        f"re-run it, e.g. `jupyter nbconvert --to notebook --execute --inplace {path.name}` in notebooks/")
    index, cell, out = _first_error(nb)
    assert cell is None, f"{path.name}: the saved outputs contain an error in cell {index}: {out.get('ename')}"
    size = path.stat().st_size
    assert size <= MAX_OUTPUT_BYTES, f"{path.name} takes {size} bytes with its outputs (limit {MAX_OUTPUT_BYTES})"
