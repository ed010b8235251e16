"""What counts as a run, the run lock, library faults and temporaries (issue 20, items 3-5).

The lock is tested with two processes: a second process holds the run's lock through
flatgen's own run_lock, `train --resume` is refused naming its pid and changes no byte, and once
the holder is killed with SIGKILL the OS has released the lock and the resume runs.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.failure_world import _write_yaml, invoke, snapshot

pytestmark = pytest.mark.usefixtures("one_thread")

TOY = {"data": {"name": "toy2d", "n_train": 64, "n_test": 16}, "model": {"preset": "mlp2d"},
       "train": {"steps": 4, "batch_size": 8, "warmup_steps": 0, "log_every": 2,
                 "ckpt_every": 2}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    w = tmp_path_factory.mktemp("runs")
    _write_yaml(w / "toy.yaml", TOY)
    result = invoke("train", w / "toy.yaml", "--out", w / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    return w


def _holder(run: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom flatgen.train.rundir import run_lock\n"
            f"with run_lock({str(run)!r}):\n    print('locked', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_until_the_holder_dies(trained, tmp_path):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(trained / "run", run)
    resume = ["train", trained / "toy.yaml", "--out", run, "--resume", "--set",
              "train.steps=6", "--no-progress"]
    holder = _holder(run)
    try:
        before = snapshot(run)
        result = invoke(*resume)
        assert result.exit_code == 2, result.output
        assert f"is in use by process {holder.pid}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert snapshot(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    result = invoke(*resume)  # the OS released the lock of the killed process
    assert result.exit_code == 0, result.output
    assert "step-6" in {p.name for p in (run / "checkpoints").iterdir()}
    assert (run / ".flatgen-lock").read_text() == ""  # idle: no stale pid


def test_force_deletes_only_what_flatgen_wrote(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    (run / "notes.txt").write_text("mine\n")
    (run / ".hidden").write_text("mine too\n")
    result = invoke("train", trained / "toy.yaml", "--out", run, "--force", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (run / "notes.txt").read_text() == "mine\n"
    assert (run / ".hidden").read_text() == "mine too\n"


def test_a_run_from_before_the_marker_still_resumes(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    (run / ".flatgen-run").unlink()
    result = invoke("train", trained / "toy.yaml", "--out", run, "--resume", "--set",
                    "train.steps=6", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (run / ".flatgen-run").is_file()  # now marked


def test_a_folder_made_for_a_refused_run_is_removed(tmp_path):
    _write_yaml(tmp_path / "c.yaml", {"data": {"name": "cifar10", "path": str(tmp_path / "no")},
                                      "model": {"preset": "unet-adm32"}})
    result = invoke("train", tmp_path / "c.yaml", "--out", tmp_path / "a" / "b")
    assert result.exit_code == 2 and "CIFAR-10 not found" in result.stderr
    assert not (tmp_path / "a").exists()  # neither the run folder nor its lock file is left


def test_export_removes_a_killed_exports_temporary(tmp_path):
    # only the export's own `.tmp-NAME-XXXXXXXX` folders go: a user's look-alike stays
    _write_yaml(tmp_path / "u.yaml", {"train": {"steps": 1, "batch_size": 2, "warmup_steps": 0}})
    assert invoke("train", tmp_path / "u.yaml", "--out", tmp_path / "unet",
                  "--no-progress").exit_code == 0
    stale, mine = tmp_path / ".tmp-p-abcd1234", tmp_path / ".tmp-p-mine"
    stale.mkdir()
    (stale / "half.json").write_text("{")
    mine.mkdir()
    result = invoke("export", tmp_path / "unet", "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    assert not stale.exists() and mine.is_dir() and (tmp_path / "p" / "model_index.json").is_file()


@pytest.mark.parametrize("value, on", [("0", False), ("false", False), ("", False),
                                       ("off", False), ("1", True), ("yes", True)])
def test_debug_is_a_boolean(monkeypatch, value, on):
    from flatgen.cli.common import debug_enabled

    monkeypatch.setenv("FLATGEN_DEBUG", value)
    assert debug_enabled() is on


def test_library_os_errors_get_their_errno_message():
    from safetensors import SafetensorError

    from flatgen.cli.common import exit_code_and_message

    err = SafetensorError("Error while serializing: I/O error: No space left on device "
                          '(os error 28) at path "/x/step-5/model.safetensors"')
    code, text, hint = exit_code_and_message(err)
    assert (code, hint) == (1, None)
    assert text == ("No space left on device: '/x/step-5/model.safetensors' "
                    "(what was saved before is kept)")
    try:  # an OSError a library re-raised as its own exception
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/a.png")
        except OSError as cause:
            raise RuntimeError("could not save the figure") from cause
    except RuntimeError as wrapped:
        code, text, _ = exit_code_and_message(wrapped)
    assert code == 1 and text.startswith("Read-only file system: '/ro/a.png'")
    code, text, hint = exit_code_and_message(RuntimeError("shape mismatch"))
    assert code == 1 and hint is not None  # a bug stays a bug


def test_sixteen_bit_pngs_are_scaled_not_clipped(tmp_path):
    from flatgen.data.images import load_image_folder

    levels = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16).repeat(4, axis=0)
    Image.fromarray(levels).save(tmp_path / "a.png")  # a 16-bit grayscale PNG
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    x = load_image_folder(tmp_path, 4, channels=1)
    expected = np.array([0, 64, 128, 255]) / 127.5 - 1.0  # 65535 -> 255, not all white
    # bicubic resizing at the same size leaves the columns as they are
    assert np.allclose(x[0, 0, 0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("inside", ["sub", "checkpoints/step-2/new", "eval"])
def test_a_run_is_never_made_inside_another_run(trained, inside):
    before = snapshot(trained / "run")
    out = trained / "run" / inside
    result = invoke("train", trained / "toy.yaml", "--out", out, "--no-progress", "--force")
    assert result.exit_code == 2 and "is inside the flatgen run" in result.output, result.output
    assert snapshot(trained / "run") == before and not out.exists()


def test_dro_takes_set_and_refuses_a_bad_key_before_writing(tmp_path):
    out = tmp_path / "dro"
    result = invoke("dro", "configs/toy2d-dro.yaml", "--out", out, "--set", "nope.x=1")
    assert result.exit_code == 2 and "configs/toy2d-dro.yaml" in result.output
    assert "nope" in result.output and not out.exists()
