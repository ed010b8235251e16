"""flatgen sharpness RUN --all-checkpoints: lambda_max and trace of each checkpoints/step-<n>."""

import json

from typer.testing import CliRunner

from flatgen.cli import app
from flatgen.train import load_run, train

runner = CliRunner()


def test_all_checkpoints(tmp_path, tiny_toy_config, one_thread):
    from flatgen.analysis import hessian_eigenvalues
    from flatgen.flatness import sharpness_loss_fn

    run_dir = tmp_path / "run"
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.steps, cfg.train.ckpt_every = 8, 4  # checkpoints/step-4 and step-8
    train(cfg, run_dir, progress=False)
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == ["step-4", "step-8"]
    result = runner.invoke(app, ["sharpness", str(run_dir), "--all-checkpoints", "--top-k", "1",
                                 "--batch", "64"])
    assert result.exit_code == 0, result.output
    history = json.loads((run_dir / "eval" / "sharpness_history.json").read_text())
    rows = history["checkpoints"]
    assert [r["step"] for r in rows] == [4, 8]
    assert (run_dir / "eval" / "sharpness_history.png").stat().st_size > 1000
    # the last entry is the final weights: the same lambda_max as measuring them directly
    run = load_run(run_dir)
    direct = hessian_eigenvalues(run.model("raw"), sharpness_loss_fn(run, 64), k=1).vals[0]
    assert abs(rows[-1]["lambda_max"] - float(direct)) < 1e-3 * abs(float(direct))
    assert rows[0]["lambda_max"] != rows[1]["lambda_max"]  # the weights did move


def test_no_history_is_one_line(tmp_path, tiny_toy_config, one_thread):
    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.keep_checkpoints = 0  # only checkpoints/last
    train(cfg, tmp_path / "run", progress=False)
    result = runner.invoke(app, ["sharpness", str(tmp_path / "run"), "--all-checkpoints"])
    assert result.exit_code == 2 and "checkpoints/step-<n>" in result.output


def test_progress_counts_the_checkpoints(tmp_path, tiny_toy_config, one_thread, monkeypatch):
    from contextlib import nullcontext

    from flatgen import sharpness_history as module

    cfg = tiny_toy_config.model_copy(deep=True)
    cfg.train.steps, cfg.train.ckpt_every = 8, 4
    train(cfg, tmp_path / "run", progress=False)
    seen: list[dict] = []

    class Recorder:  # stands in for rich's Progress: records what the bar is told
        def add_task(self, description, total, **fields):
            seen.append({"description": description, "total": total})
            return 0

        def update(self, task, **fields):
            seen.append(fields)

    monkeypatch.setattr(module, "make_progress", lambda enabled, fields="": nullcontext(
        Recorder() if enabled else None))
    module.sharpness_history(load_run(tmp_path / "run"), tmp_path / "out", batch=32,
                             trace_matvecs=6)
    assert seen[0] == {"description": "checkpoints", "total": 2}
    assert [u["completed"] for u in seen if "completed" in u] == [1, 2]
    stages = [u["stage"] for u in seen if "stage" in u]
    assert "step 4: eigenvalues 1/100" in stages and "step 8: trace 6/6" in stages
