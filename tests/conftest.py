"""Shared set-up of the test suite.

The suite runs on every core: pytest.ini passes `-n auto` to pytest-xdist, one worker
process per core, each taking the next test as it finishes one. The tests train and run
a tiny WavLM, which keeps one core busy and gains little from a second thread, so two tests
side by side take about as long as one alone. Each worker gets its share of the cores (one
thread on a 2-core machine), and so does everything it starts (train.py under torchrun,
notebook kernels), through OMP_NUM_THREADS: more OpenMP threads than free cores spin
against each other (docs/performance.md, "Several jobs on one machine").

The slowest tests start first (`COST_S`, measured), so that no worker is left at the end
with a long test while the other has nothing to do. `-n 0` runs one test at a time.
"""
import os
import pathlib
import sys

# Tests import the flat library modules from the repository root.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    threads = str(max(1, len(os.sched_getaffinity(0)) // WORKERS))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = threads
    import torch                     # after the variables: OpenMP reads them once, at start
    torch.set_num_threads(int(threads))

# Seconds each took in the two-worker suite on the 2-core reference machine (pytest
# --durations), for the tests over half a minute. Only the order depends on these numbers.
COST_S = {
    "test_notebook_executes[04": 323, "test_notebook_executes[07": 240,
    "test_default_toy_corpora_are_deterministic[cm": 88, "test_notebook_executes[06": 128,
    "test_the_lr_follows_the_global_batch": 110, "test_grading_notebook_01_three_submissions": 75,
    "test_default_toy_corpora_are_deterministic[sv": 37, "test_tiny_sweep_end_to_end": 67,
    "test_reference_solutions_pass_every_hidden_test[08": 36,
}


def cost(item):
    return max((s for key, s in COST_S.items() if item.name.startswith(key)), default=0)


def pytest_collection_modifyitems(items):
    # A stable sort: the costly tests first, the slow-marked ones next, then the file order.
    items.sort(key=lambda item: (-cost(item), item.get_closest_marker("slow") is None))
