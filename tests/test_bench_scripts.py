"""scripts/bench_scaling.py at toy sizes (its cells, its memory figures, its table and its profile),
scripts/bench_recurrence.py, and scripts/bench_vs_seed.py (against the rfeinman/Sketch-RNN mirror when present)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
try:
    import bench_recurrence
    import bench_scaling
    import bench_vs_seed
finally:
    sys.path.pop(0)

TINY = ["sketch_rnn.enc_rnn_size=8", "sketch_rnn.dec_rnn_size=16", "sketch_rnn.z_size=4", "sketch_rnn.num_mixture=2",
        "sketch_ode.n_hidden=8", "sketch_ode.z_size=4", "sketch_ode.enc_arch=[8]", "sketch_ode.dec_arch=[8]"]


def spec(model: str, **kw) -> dict:
    overrides = bench_scaling.parse_overrides(TINY)[model]
    return {"model": model, "batch_size": 3, "length": 6, "steps": 1, "warmup": 0, "device": "cpu", "threads": 1,
            "overrides": overrides, "seed": 0, "profile": False, "profile_rows": 5, "keep_freed_memory": False,
            **kw}


def test_model_settings_come_from_the_shipped_configs_with_the_benchmark_fixed_ones():
    rnn = bench_scaling.model_kwargs("sketch_rnn", 250)
    assert (rnn["enc_rnn_size"], rnn["dec_rnn_size"], rnn["z_size"], rnn["num_mixture"]) == (256, 512, 128, 20)
    assert rnn["dec_model"] == "layer_norm" and rnn["fast"] == "auto" and rnn["max_seq_len"] == 250
    ode = bench_scaling.model_kwargs("sketch_ode", 100, {"n_hidden": 8})
    assert ode["backend"] == "fast" and ode["n_points"] == 100 and ode["n_hidden"] == 8 and ode["z_size"] == 48
    assert bench_scaling.parse_overrides(["sketch_ode.dec_arch=[8, 8]"])["sketch_ode"] == {"dec_arch": [8, 8]}
    with pytest.raises(ValueError, match="MODEL.KEY=VALUE"):
        bench_scaling.parse_overrides(["dec_rnn_size=8"])


@pytest.mark.parametrize("model", ["sketch_rnn", "sketch_ode"])
def test_a_cell_builds_the_exact_batch_shape_and_reports_rate_and_memory(model):
    built, batch, clip = bench_scaling.build_cell(model, 3, 6, bench_scaling.parse_overrides(TINY)[model], 0,
                                                  bench_scaling.pick_device("cpu"))
    if model == "sketch_rnn":
        assert batch["strokes"].shape == (3, 7, 5) and clip  # start token + 6 steps, padded
    else:
        assert batch["curve"].shape == (3, 6, 3) and built.solver.fast and not clip
    row = bench_scaling.run_cell(spec(model))
    assert row["sketches_per_s"] == pytest.approx(3 / row["step_s"])
    assert row["peak_rss_mb"] >= row["baseline_rss_mb"] > 0
    assert row["peak_mem_mb"] == pytest.approx(row["peak_rss_mb"] - row["baseline_rss_mb"])


def test_profile_lists_the_top_ops():
    row = bench_scaling.run_cell(spec("sketch_ode", profile=True))
    top = row["profile"]["top"]
    assert 0 < len(top) <= 5 and "Self CPU" in row["profile"]["table"]
    assert top[0]["self_cpu_ms"] >= top[-1]["self_cpu_ms"] and 0 < top[0]["self_cpu_share"] <= 1


def test_table_and_summary_from_rows():
    rows = [{"model": "m", "batch_size": b, "length": n, "step_s": b * n / 1000, "sketches_per_s": 1000 / n,
             "ms_per_sketch": n / 1000, "peak_mem_mb": b, "peak_rss_mb": 100 + b}
            for n in (10, 20) for b in (2, 4)]
    rows.append({"model": "m", "batch_size": 8, "length": 10, "error": "RuntimeError: out of memory"})
    table = bench_scaling.markdown_table(rows, cuda=False).splitlines()
    assert len(table) == 2 + 5 and table[2] == "| m | 2 | 10 | 20 | 100.0 | 0.01 | 2 | 102 |"
    assert "failed: RuntimeError" in table[-1]
    summary = bench_scaling.scaling_summary(rows)
    assert "m, length 10: ms/sketch at batch [2, 4]: 0.01, 0.01 (last/first 1.00)" in summary
    assert "m, batch 2: step time x2.00 from length 10 to 20 (length x2.00)" in summary


@pytest.mark.slow
def test_the_script_runs_each_cell_in_a_fresh_process(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))  # the spawned child imports bench_scaling by name
    out = tmp_path / "scaling.json"
    report = bench_scaling.main(["--models", "sketch_ode", "--batch-sizes", "2", "--lengths", "5", "--steps", "1",
                                 "--warmup", "0", "--set", *TINY[4:], "--out", str(out)])
    (row,) = report["results"]
    assert "error" not in row, row
    assert row["peak_rss_mb"] > row["baseline_rss_mb"] > 0 and out.is_file()


def test_bench_recurrence_times_both_paths_interleaved_and_parses_sizes(tmp_path, capsys):
    out = tmp_path / "rec.json"
    results = bench_recurrence.main(["--cells", "lstm", "hyper", "--sizes", "3x8", "2X16", "--seq-len", "4",
                                     "--rounds", "2", "--no-keep-freed-memory", "--out", str(out)])
    assert [(r["cell"], r["batch"], r["hidden"]) for r in results] == [
        ("lstm", 3, 8), ("lstm", 2, 16), ("hyper", 3, 8), ("hyper", 2, 16)]
    for r in results:
        assert len(r["times"]["eager"]) == len(r["times"]["fused"]) == 2
        assert r["fused_speedup"] == pytest.approx(r["eager_s"] / r["fused_s"])
        assert len(r["page_faults"]["fused"]) == 2 and r["fused_faults"] >= 0
    report = json.loads(out.read_text())
    assert report["freed_memory_kept"] is False and report["config"]["sizes"] == [[3, 8], [2, 16]]
    # what the fused steps ran on, in the report and under the table: the C++ kernels or the Python steps
    assert report["step_kernels"].startswith(("cpp-", "python ("))
    printed = capsys.readouterr().out
    assert "fused" in printed and f"step kernels: {report['step_kernels']}" in printed
    with pytest.raises(SystemExit):
        bench_recurrence.parse_args(["--sizes", "100by256"])


BENCHMARKS = sorted(p.stem for p in (REPO / "scripts").glob("bench_*.py") if p.stem != "bench_report")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_parses_its_command_line(name, capsys):
    import importlib

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.pop(0)
    with pytest.raises(SystemExit) as stop:
        module.parse_args(["--help"])
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out


def test_vs_seed_turns_sum_consecutive_steps():
    assert bench_vs_seed._turn_times([1.0, 2.0, 3.0, 4.0], 2) == [3.0, 7.0]
    assert bench_vs_seed._turn_times([1.0, 2.0], 1) == [1.0, 2.0]


SEED_MIRROR = Path("/work/.mirror/rfeinman+Sketch-RNN/repo")


@pytest.mark.skipif(not SEED_MIRROR.exists(), reason=f"rfeinman/Sketch-RNN mirror not at {SEED_MIRROR}")
def test_vs_seed_runs_both_projects_in_turns(tmp_path):
    out = tmp_path / "vs_seed.json"
    report = bench_vs_seed.main(["--seed-repo", str(SEED_MIRROR), "--cells", "lstm", "--modes", "auto",
                                 "--batch-size", "2", "--seq-len", "6", "--enc-size", "4", "--dec-size", "8",
                                 "--z-size", "4", "--num-mixture", "2", "--rounds", "2", "--turn", "3",
                                 "--warmup", "0", "--out", str(out)])
    rows = report["results"]["lstm"]
    assert set(rows) == {"rfeinman", "sketchlab auto"}
    for row in rows.values():
        assert len(row["step_s"]) == 6 and all(t > 0 for t in row["step_s"])
        assert row["ratio_vs_rfeinman"] > 0 and row["sketches_per_s"] > 0
    assert json.loads(out.read_text())["config"]["turn"] == 3
