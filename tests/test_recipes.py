"""The recipes against their documentation, the command line that reads them, and the lr
schedule the authors' toolkits use (recipes.py, docs/method.md Sec. 1)."""
import ast
import math
import os
import re

import pytest

import recipes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def documented_recipes():
    """{recipe name: {key: value}} from the tables under '#### Recipe `name`' headings."""
    text = open(os.path.join(ROOT, "docs", "method.md"), encoding="utf-8").read()
    tables = {}
    for match in re.finditer(r"^#### Recipe `(\w+)`.*?\n(.*?)(?=^#|^\*\*)", text, re.M | re.S):
        rows = {}
        for line in match.group(2).splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2 and cells[0].startswith("`") and cells[1].startswith("`"):
                key = cells[0].strip("`")
                assert key not in rows, f"{match.group(1)}: {key} documented twice"
                rows[key] = ast.literal_eval(cells[1].strip("`"))
        tables[match.group(1)] = rows
    return tables


def test_real_data_recipes_equal_their_documented_tables():
    tables = documented_recipes()
    assert set(tables) == {"vox2", "asvspoof5"}
    for documented, same in (("vox2", ("vox1", "vox2")),
                             ("asvspoof5", ("asvspoof5", "asvspoof2019"))):
        table = tables[documented]
        for name in same:
            recipe = recipes.RECIPES[name]
            assert set(table) == set(recipe), (name, set(table) ^ set(recipe))
            for key, value in table.items():
                assert recipe[key] == value and type(recipe[key]) is type(value), (name, key)


def test_toy_recipes_keep_their_tuned_values():
    """The values every measured toy number in docs/results.md was made with."""
    tuned = dict(ssl="tiny", steps=1200, epochs=None, batch_size=16, crop_seconds=2.0, lr=2e-3,
                 final_lr=1e-4, lr_warmup_epochs=2.0, lr_schedule="warmup-then-decay",
                 lr_scale_batch=0, frontend_lr_ratio=1.0, weight_decay=1e-7, grad_clip=5.0,
                 grad_mult=1.0, reg_lr=0.1, mhfa_heads=8, mhfa_compression=64,
                 margin_warmup=0.25, sparsity_warmup=None, sparsity_warmup_frac=0.3,
                 sparsity_schedule="cosine", settle_frac=0.05, average_last=1, eval_every=300,
                 target=0.7, aam_scale=32.0, aam_margin=0.2, sub_centers=3, inter_topk=5,
                 inter_penalty=0.06, freeze_ssl_steps=0, head="mhfa")
    for name in ("toy", "toy_spoof"):
        for key, value in tuned.items():
            assert recipes.RECIPES[name][key] == value, (name, key)


def test_every_recipe_setting_is_a_flag_with_the_recipe_as_default():
    for name, recipe in recipes.RECIPES.items():
        argv = ["--data", name] + (["--data-root", ROOT] if not name.startswith("toy") else [])
        args = recipes.parse_args(argv)
        for key, value in recipe.items():
            assert getattr(args, key) == value, (name, key)
    parser = recipes.build_parser("vox2")
    flags = {a.dest for a in parser._actions}
    assert set(recipes.RECIPES["vox2"]) <= flags
    help_text = parser.format_help()
    assert "--toy-size" not in help_text                    # test-only option
    assert "asvspoof5, asvspoof2019: 0.0005" in help_text    # every recipe's value is listed


def test_flags_override_the_recipe():
    args = recipes.parse_args(["--data", "toy", "--lr", "0.5", "--average-last", "3"])
    assert args.lr == 0.5 and args.average_last == 3 and args.final_lr == 1e-4


@pytest.mark.parametrize("argv, message", [
    (["--data", "toy", "--average-last", "0"], "--average-last must be at least 1"),
    (["--data", "toy", "--average-last", "2", "--settle-frac", "0"], "--settle-frac > 0"),
    (["--data", "toy", "--margin-warmup", "1.5"], "--margin-warmup must lie in"),
    (["--data", "toy", "--lr-scale-batch", "-1"], "must not be negative"),
])
def test_recipe_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        recipes.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_lr_scaling_follows_the_global_batch():
    args = recipes.parse_args(["--data", "vox2", "--data-root", ROOT])
    assert recipes.lr_scale(args, world=8) == 16.0            # the paper's 8 GPUs x 128
    args.batch_size = 64
    assert recipes.lr_scale(args, world=2) == recipes.lr_scale(args, world=1) * 2 == 2.0
    args.lr_scale_batch = 0
    assert recipes.lr_scale(args, world=8) == 1.0


def test_authors_lr_curve():
    """ExponentialDecrease with warm_from_zero: s * lr * min(it / W, 1) * (f / lr) ** (it / T),
    written out per step (wespeaker schedulers.py), against recipes.lr_at."""
    lr, final, W, T = 1e-4, 1e-6, 20, 120
    for step in (0, 1, 7, 19, 20, 21, 60, 119, 120):
        expected = lr * min(step / W, 1.0) * math.exp(step / T * math.log(final / lr))
        assert recipes.lr_at(step, W, T, lr, final, "warmup-times-decay") == pytest.approx(
            expected, rel=1e-12)
    peak = max(recipes.lr_at(s, W, T, lr, final, "warmup-times-decay") for s in range(T + 1))
    assert peak == pytest.approx(lr * (final / lr) ** (W / T))   # at the end of the warm-up
    # the toy curve: a ramp up to lr, then the decay
    assert recipes.lr_at(W, W, T, lr, final, "warmup-then-decay") == lr
    assert recipes.lr_at(T, W, T, lr, final, "warmup-then-decay") == pytest.approx(final)


def test_snapshot_steps_lie_in_the_settle_phase():
    assert recipes.snapshot_steps(95, 100, 1) == [100]
    assert recipes.snapshot_steps(90, 100, 2) == [95, 100]
    assert recipes.snapshot_steps(1140, 1200, 3) == [1160, 1180, 1200]
    with pytest.raises(ValueError, match="too few"):
        recipes.snapshot_steps(98, 100, 3)


def test_loader_workers_default(monkeypatch):
    import torch
    import devices
    assert devices.default_workers(torch.device("cpu"), 1) == 1
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 64)
    assert devices.default_workers(torch.device("cuda"), 1) == devices.GPU_LOADER_WORKERS == 6
    assert devices.default_workers(torch.device("cuda"), 16) == 3      # 4 cores per process
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 2)
    assert devices.default_workers(torch.device("cuda"), 1) == 1
