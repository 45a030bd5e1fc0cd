"""benchmarks/bench_loader.py --quick, so that the benchmark cannot rot: it runs every
section on tiny sizes, and its "before" (the code before windowed reads, kept in the
benchmark) and "after" (data.py) give the same crops on the same random draws."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_loader_quick():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_loader.py"),
                           "--quick", "--max-workers", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    for section in ("[1]", "[2]", "[3]", "[4]", "[5]"):
        assert f"\n{section} " in proc.stdout
    rows = re.findall(r"^    (.+?, p = 1|p = \S+ \(SV recipe\)|p = 1\.0|no augmentation) .*"
                      r"x\s+(\S+)$", proc.stdout, flags=re.M)
    assert len(rows) == 7, rows
    assert all(float(diff) < 1e-5 for _, diff in rows), rows    # before == after, to rounding
