"""benchmarks/gpu_check.py, rehearsed on the CPU so that it cannot rot between GPU visits.

`--device cpu --quick` runs every section's code on tiny sizes. Here we check its JSON:
every section is there and passed, the correctness checks ran, and every GPU-only
measurement (bf16 speed, CUDA memory, the overhead goal) is marked skipped with a
reason that says it needs CUDA, rather than silently missing or reported as a number.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")
SECTIONS = ["oracle_torchaudio", "pruned_equals_masked", "bf16_autocast", "train_throughput",
            "inference_speedup", "reverb_on_device", "train_toy"]
VARIANTS = ["torchaudio", "ours, no gates", "ours, gated", "ours, gated+deploy"]


def run_script(tmp_path, *extra, timeout=900):
    out_json = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, SCRIPT, "--device", "cpu", "--quick",
                           "--json", str(out_json),
                           "--out", str(tmp_path / "out"), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(proc.stdout[-8000:], proc.stderr[-3000:])
    return proc, (json.loads(out_json.read_text()) if out_json.exists() else None)


def rows_of(result, section):
    return next(s for s in result["sections"] if s["name"] == section)["rows"]


def gpu_only_checks():
    """The measurements that only mean something on a GPU (named independently of the
    script's own bookkeeping)."""
    names = []
    for prec in ("fp32", "bf16"):
        names.append(f"tiny: gate overhead {prec}, gated / torchaudio")
        names += [f"tiny: peak memory {prec}, {v}" for v in VARIANTS]
    names += [f"tiny: train step bf16, {v}" for v in VARIANTS]
    names += [f"tiny, 6 layers at sparsity 0.64: inference bf16, batch {b}"
              for b in ("1 x 2 s", "4 x 1 s")]
    return names


@pytest.mark.slow
def test_cpu_rehearsal_passes_and_marks_gpu_only_parts_skipped(tmp_path):
    proc, result = run_script(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["passed"] and result["failed_sections"] == []
    assert [s["name"] for s in result["sections"]] == SECTIONS
    for s in result["sections"]:
        assert s["status"] == "passed", (s["name"], s["error"])
        assert s["rows"], s["name"]
    assert "SUMMARY" in proc.stdout and all(name in proc.stdout.split("SUMMARY")[1]
                                            for name in SECTIONS)

    rows = [r for s in result["sections"] for r in s["rows"]]
    skipped = {r["check"]: r for r in rows if r["status"] == "skipped"}
    expected = gpu_only_checks()
    # Every GPU-only part is present, skipped, and says why; nothing else is skipped.
    assert sorted(skipped) == sorted(expected)
    for name in expected:
        assert skipped[name]["reason"].startswith("needs CUDA"), skipped[name]
        assert skipped[name]["value"] is None
    print(f"\n{len(skipped)} GPU-only rows skipped on the CPU, e.g. "
          f"{expected[0]!r}: {skipped[expected[0]]['reason']!r}")

    # The correctness checks ran and passed on the CPU.
    passed = [r["check"] for r in rows if r["status"] == "passed"]
    assert sum("max |ours - torchaudio|" in c for c in passed) == 2
    assert sum("max |masked - pruned|" in c for c in passed) == 2
    bf16 = {r["check"]: r for r in rows_of(result, "bf16_autocast")}
    assert bf16["tiny: expected_num_params() dtype under bf16 autocast"]["status"] == "passed"
    assert (bf16["tiny: expected_num_params() dtype under bf16 autocast"]["value"]
            in ("float32", "float64"))
    assert (bf16["tiny: Lagrangian regulariser dtype under bf16 autocast"]["value"]
            in ("float32", "float64"))
    assert bf16["tiny: min cosine(emb(bf16), emb(fp32)) over the batch"]["value"] > 0.99
    # The fp32 timings on the CPU are measured (rehearsal numbers, not results).
    steps = {r["check"]: r["value"] for r in rows_of(result, "train_throughput")
             if r["status"] == "info"}
    for v in VARIANTS:
        assert steps[f"tiny: train step fp32, {v}"] > 0
    # train.py ran end to end and its report was read.
    toy = {r["check"]: r for r in rows_of(result, "train_toy")}
    assert toy["train.py exit code"]["value"] == 0
    assert (0.0 <= toy["report.json: sparsity (4 steps: not meant to reach the target)"]["value"]
            < 1.0)
    assert (tmp_path / "out" / "train_toy" / "report.json").exists()


@pytest.mark.slow
def test_a_failing_section_is_recorded_and_the_rest_still_runs(tmp_path):
    """A train.py run stopped by the timeout fails its section, the other section still
    passes, and the exit code reports the failure."""
    proc, result = run_script(tmp_path, "--sections", "train_toy,pruned_equals_masked",
                              "--train-timeout", "0.5")
    assert proc.returncode == 1
    status = {s["name"]: s["status"] for s in result["sections"]}
    assert status["train_toy"] == "failed" and status["pruned_equals_masked"] == "passed"
    assert status["oracle_torchaudio"] == "skipped"
    assert result["failed_sections"] == ["train_toy"] and not result["passed"]
    assert "FAILED: train_toy" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="checks the message for machines without a GPU")
def test_asking_for_cuda_without_a_gpu_says_how_to_rehearse():
    proc = subprocess.run([sys.executable, SCRIPT], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert "--device cpu --quick" in proc.stderr
