"""What a hostile user tries against the installed CLI: each gets one line and exit 1, or a clean
recovery, and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import cnn_train.engine.loop as loop
import cnn_train.engine.trainer as trainer_module
from cnn_train.config_checks import check_train_config
from cnn_train.engine.stepper import Stepper
from cnn_train.engine.trainer import run_training
from cnn_train.errors import Interrupted, UserError
from tests.helpers import QUICK, compose_config, run_cli, write_image, write_tree
from tests.helpers.runs import LONG_RUN, assert_same_state, finish, start_training

SCRIPTS_AND_ARGS = {
    "cnn-train": QUICK,
    "cnn-eval": ["checkpoint=x.pt"],
    "cnn-summary": [],
    "cnn-predict": ["checkpoint=x.pt", "images=x.png"],
    "cnn-export": ["checkpoint=x.pt", "format=onnx"],
}


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), done.stderr
    return line


CODE_OVERRIDES = [
    "+hydra.callbacks.x._target_=builtins.open +hydra.callbacks.x.file=VICTIM "
    "+hydra.callbacks.x.mode=w",
    "+hydra.callbacks.x._target_=torch.load +hydra.callbacks.x.f=VICTIM",
    "hydra.callbacks.sweep_summary._target_=builtins.print",
    "++hydra.job_logging.handlers.console.class=logging.FileHandler",
]


@pytest.mark.parametrize(
    ("script", "callback"),
    [("cnn-train", code) for code in CODE_OVERRIDES]
    + [(script, CODE_OVERRIDES[0]) for script in sorted(SCRIPTS_AND_ARGS) if script != "cnn-train"],
)
def test_the_command_line_cannot_name_code_to_run(tmp_path: Path, script: str, callback: str):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    overrides = callback.replace("VICTIM", str(victim)).split()
    done = run_cli(script, *SCRIPTS_AND_ARGS[script], *overrides, cwd=tmp_path)
    assert "the command line cannot name code to run" in one_error_line(done)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["model=vgg16"], "model.name (resnet34 -> vgg16)"),
        (["data.num_classes=4"], "data.num_classes (10 -> 4)"),
        (["optimizer=adamw"], "optimizer.name (sgd -> adamw)"),
        (["data.native_size=16"], "data.native_size (8 -> 16)"),
    ],
)
def test_resume_refuses_a_checkpoint_of_other_settings(
    train_config, tmp_path: Path, overrides: list[str], names: str
) -> None:
    run_training(train_config(), tmp_path)
    before = (tmp_path / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(UserError, match=r"trained with other settings: .*") as raised:
        run_training(train_config("resume=auto", *overrides), tmp_path)
    assert names in str(raised.value) and "\n" not in str(raised.value)
    assert (tmp_path / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_allows_a_longer_run_moved_data_and_other_workers(train_config, tmp_path) -> None:
    run_training(train_config(), tmp_path)
    run_training(train_config("resume=auto", "trainer.epochs=2", "data.num_workers=1"), tmp_path)
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("requested", [3, 12])
def test_a_class_count_other_than_the_datasets_is_refused_up_front(
    train_config, tmp_path: Path, requested: int
) -> None:
    with pytest.raises(UserError, match=f"model.num_classes={requested} but the dataset has 10"):
        run_training(train_config(f"model.num_classes={requested}"), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_one_class_dataset_is_refused(train_config, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"data\.num_classes must be in \[2, "):
        run_training(train_config("data.num_classes=1"), tmp_path)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.image_size=100000", "data.image_size"),
        ("optimizer.momentum=-1", "optimizer.momentum"),
        ("optimizer.momentum=nan", "optimizer.momentum"),
        ("optimizer=adamw optimizer.eps=-1", "optimizer.eps"),
        ("optimizer=adamw optimizer.betas=[nan,2]", "optimizer.betas"),
        ("optimizer=adamw optimizer.betas=[0.9,2]", "optimizer.betas"),
        ("scheduler=step scheduler.step_size=0", "scheduler.step_size"),
        ("scheduler.pct_start=2", "scheduler.pct_start"),
        ("scheduler=cosine scheduler.warmup_start_factor=0", "scheduler.warmup_start_factor"),
        ("+trainer.epoch=5", "trainer.epoch"),
        ("+foo=bar", "foo"),
    ],
)
def test_values_that_would_reach_torch_unchecked_are_refused(override: str, key: str) -> None:
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as raised:
        check_train_config(compose_config("train", [*QUICK, *override.split()]))
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_cnn_export_never_overwrites_the_checkpoint_it_reads(tmp_path: Path, train_config):
    run_training(train_config(), tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    before = best.read_bytes()
    done = run_cli("cnn-export", f"checkpoint={best}", "format=torchscript", f"output={best}",
                   cwd=tmp_path)  # fmt: skip
    assert "is the checkpoint being exported" in one_error_line(done)
    assert best.read_bytes() == before
    (tmp_path / "out").mkdir()
    done = run_cli(
        "cnn-export", f"checkpoint={best}", "format=torchscript", "output=out", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "best.ts").is_file()


@pytest.mark.slow
def test_cnn_predict_skips_a_decompression_bomb_and_classifies_the_rest(tmp_path, train_config):
    run_training(train_config("data.num_classes=3"), tmp_path / "run")
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8), "red").save(folder / "a_good.png")
    Image.new("1", (20000, 20000)).save(folder / "b_bomb.png")  # 400 Mpx: over Pillow's limit
    Image.new("RGB", (8, 8), "blue").save(folder / "c_good.png")
    best = tmp_path / "run" / "checkpoints" / "best.pt"
    done = run_cli("cnn-predict", f"checkpoint={best}", f"images={folder}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr and "b_bomb.png" in done.stderr
    blocks = done.stdout.split(str(folder))
    assert len([block for block in blocks if "class_" in block]) == 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty (0 bytes)"),
        (b"\x80\x04K", "cut short, damaged or not a PyTorch checkpoint"),
        (b"PK\x03\x04garbage", "cut short, damaged or not a PyTorch checkpoint"),
    ],
)
def test_a_broken_checkpoint_is_named_in_plain_words(tmp_path: Path, content, expected):
    (tmp_path / "bad.pt").write_bytes(content)
    done = run_cli("cnn-eval", "checkpoint=bad.pt", cwd=tmp_path)
    line = one_error_line(done)
    assert expected in line and "weights_only" not in line and "<class" not in line


def test_an_unsafe_pickle_is_refused_without_advice_to_unpickle_it(tmp_path: Path) -> None:
    torch.save({"model": {}, "sneaky": Path("x")}, tmp_path / "evil.pt")
    line = one_error_line(run_cli("cnn-eval", "checkpoint=evil.pt", cwd=tmp_path))
    assert "never unpickles" in line and "weights_only=False" not in line


def test_a_folder_passed_as_a_checkpoint_names_the_file_to_pass(tmp_path, train_config):
    run_training(train_config(), tmp_path / "run")
    line = one_error_line(run_cli("cnn-eval", "checkpoint=run", cwd=tmp_path))
    assert "is a folder" in line and "run/checkpoints/best.pt" in line


def poison_at_call(call: int):
    """A Stepper.train_batch that makes the weights NaN just before the n-th batch."""
    original, calls = Stepper.train_batch, {"count": 0}

    def train_batch(stepper: Stepper, images, targets):
        calls["count"] += 1
        if calls["count"] == call:
            with torch.no_grad():
                for parameter in stepper.raw_model.parameters():
                    parameter.fill_(float("nan"))
        return original(stepper, images, targets)

    return train_batch


@pytest.mark.parametrize(
    ("where", "call", "overrides"),
    [
        ("a checkpoint_every_steps step", 2, ["trainer.checkpoint_every_steps=2"]),
        ("the last step of an epoch", 4, []),
        ("the last step of the run", 8, []),
    ],
)
def test_a_deferred_nonfinite_check_never_saves_nan_weights(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where, call, overrides
) -> None:
    """The GPU's one-step-late check, forced on the CPU: every save reads the last flag first."""
    monkeypatch.setattr(loop, "DEFERRED_DEVICE_TYPES", frozenset({"cpu"}))
    monkeypatch.setattr(Stepper, "train_batch", poison_at_call(call))
    cfg = train_config("trainer.epochs=2", *overrides)  # 64 images / 16 = 4 steps an epoch
    with pytest.raises(UserError, match=f"non-finite at step {call};"):
        run_training(cfg, tmp_path)
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        state = torch.load(path, weights_only=True)
        assert state["step"] < call, where
        assert all(
            torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()
        )


def test_a_stop_signal_during_validation_saves_and_the_resumed_run_is_bitwise_equal(
    train_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = tmp_path / "straight"
    run_training(train_config("trainer.epochs=2"), straight)
    real_evaluate = trainer_module.eval_pass
    calls = {"count": 0}

    def signal_in_last_validation(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2:  # the last epoch's validation: SIGTERM arrives mid-way
            os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "eval_pass", signal_in_last_validation)
    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted) as raised:
        run_training(train_config("trainer.epochs=2"), stopped)
    assert raised.value.exit_code == 143
    state = torch.load(stopped / "checkpoints" / "last.pt", weights_only=True)
    assert (state["epoch"], state["epoch_done"], state["batch_in_epoch"]) == (1, False, 4)
    monkeypatch.setattr(trainer_module, "eval_pass", real_evaluate)
    run_training(train_config("trainer.epochs=2", "resume=auto"), stopped)
    assert_same_state(straight, stopped)


@pytest.mark.slow
def test_a_second_process_on_a_run_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start_training(run_dir, base=[*LONG_RUN, "trainer.epochs=30"])
    lock = run_dir / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
        assert first.poll() is None, first.communicate()[1]
        time.sleep(0.05)
    try:
        second = run_cli("cnn-train", *LONG_RUN, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        line = one_error_line(second)
        assert f"in use by process {first.pid}" in line
    finally:
        first.kill()
        first.wait()
    # The lock died with its holder (SIGKILL): the folder is usable again, and the killed save's
    # temporary file is cleared.
    stale = run_dir / "checkpoints" / ".last.pt.999999.tmp"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"x" * 1000)
    finish(run_dir, "resume=auto", "trainer.max_steps=2")
    assert not stale.exists()


def test_a_symlink_loop_is_skipped_and_no_file_lands_in_two_splits(tmp_path: Path) -> None:
    from cnn_train.data.folder import scan_folder

    root = tmp_path / "images"
    write_tree(root, classes=("a", "b", "c"), per_class=8)
    (root / "a" / "self").symlink_to(root / "a", target_is_directory=True)
    (root / "b" / "twin.jpg").symlink_to(root / "c" / "0.jpg")
    dataset = scan_folder(str(root), val_fraction=0.25)
    train, val = dataset.splits["train"].paths, dataset.splits["val"].paths
    real = [os.path.realpath(path) for path in [*train, *val]]
    assert len(real) == len(set(real)) == 24
    assert not any("/self/" in path for path in train + val)


def test_an_unreadable_class_folder_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from cnn_train.data import folder as folder_module

    root = tmp_path / "images"
    write_tree(root, classes=("a", "b"), per_class=4)
    real_scandir = os.scandir

    def locked(path="."):
        if str(path).endswith("/b"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(folder_module.os, "scandir", locked)
    with pytest.raises(UserError, match=r"cannot read .*/b \(Permission denied\)"):
        folder_module.scan_folder(str(root), val_fraction=0.25)


def test_too_few_images_per_class_says_so_in_a_short_line(tmp_path: Path) -> None:
    from cnn_train.data.folder import scan_folder

    root = tmp_path / "images"
    for index in range(300):
        (root / f"class{index:03d}").mkdir(parents=True)
        write_image(root / f"class{index:03d}" / "only.png", "RGB", seed=index, size=(4, 4))
    with pytest.raises(UserError) as raised:
        scan_folder(str(root), val_fraction=0.1)
    message = str(raised.value)
    assert "300 images in 300 classes (the smallest has 1)" in message and len(message) < 400


# --- Whole files through one writer; appended records whole lines -----------------------------


def disk_full(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_whole_file_write_keeps_the_previous_file(tmp_path: Path) -> None:
    from cnn_train.files import write_atomically, write_text_atomically

    target = tmp_path / "result.json"
    write_text_atomically(target, "old\n")
    with pytest.raises(UserError, match=r"could not write file .*result\.json: No space left"):
        write_atomically(target, lambda handle: handle.write(b"half") and disk_full())
    assert target.read_text() == "old\n" and sorted(tmp_path.iterdir()) == [target]
    blocked = tmp_path / "a_file" / "x.json"
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match=r"could not write file .*x\.json: .*a_file is a file"):
        write_text_atomically(blocked, "{}")


def test_a_failed_append_leaves_no_partial_line(tmp_path: Path, monkeypatch) -> None:
    import cnn_train.files as files

    target = tmp_path / "metrics.jsonl"
    files.append_line(target, '{"epoch": 0}')
    real_write, calls = os.write, {"count": 0}

    def half_then_full(descriptor, data):
        calls["count"] += 1
        return real_write(descriptor, data[:5]) if calls["count"] == 1 else disk_full()

    monkeypatch.setattr(files.os, "write", half_then_full)
    with pytest.raises(UserError, match=r"could not append to .*metrics\.jsonl: No space") as hit:
        files.append_line(target, '{"epoch": 1, "val_acc1": 0.5}')
    assert "\n" not in str(hit.value)
    assert target.read_text() == '{"epoch": 0}\n'


def test_a_record_after_a_cut_line_starts_a_line_of_its_own(tmp_path: Path) -> None:
    from cnn_train.files import append_line

    target = tmp_path / "metrics.jsonl"
    target.write_text('{"epoch": 0}\n{"epo')  # a writer killed mid-line
    append_line(target, '{"epoch": 1}')
    assert target.read_text().splitlines()[-1] == '{"epoch": 1}'


def test_a_full_disk_while_logging_an_epoch_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import cnn_train.files as files
    from cnn_train.tracking import RunTracker

    tracker = RunTracker(tmp_path)
    tracker.log_epoch({"epoch": 0, "step": 1, "train_loss": 1.0})
    monkeypatch.setattr(files.os, "write", disk_full)
    try:
        with pytest.raises(UserError, match=r"could not append to .*metrics\.jsonl") as raised:
            tracker.log_epoch({"epoch": 1, "step": 2, "train_loss": 0.5})
    finally:
        monkeypatch.undo()
        tracker.close()
    assert "\n" not in str(raised.value)
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


# --- Exports never clobber ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a quick run (synthetic 8 px, 10 classes): checkpoints/best.pt, last.pt."""
    run_dir = tmp_path_factory.mktemp("quick") / "run"
    run_training(compose_config("train", QUICK), run_dir)
    return run_dir


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def test_an_existing_export_output_is_refused_unless_overwrite(quick_run, tmp_path) -> None:
    from cnn_train.export import export

    best, target = quick_run / "checkpoints" / "best.pt", tmp_path / "model.ts"
    target.write_text("an older export")
    with pytest.raises(UserError, match=r"output=.*model\.ts exists; pass overwrite=true"):
        export(str(best), "torchscript", str(target))
    assert target.read_text() == "an older export"
    export(str(best), "torchscript", str(target), overwrite=True)
    assert torch.jit.load(str(target)) is not None
    assert [path.name for path in tmp_path.iterdir()] == ["model.ts"]  # no temporary left


def test_cnn_export_refuses_an_existing_output_in_one_line(quick_run, tmp_path) -> None:
    (tmp_path / "good.ts").write_text("precious")
    best = quick_run / "checkpoints" / "best.pt"
    done = run_cli("cnn-export", f"checkpoint={best}", "format=torchscript", "output=good.ts",
                   cwd=tmp_path)  # fmt: skip
    assert "good.ts exists; pass overwrite=true" in one_error_line(done)
    assert (tmp_path / "good.ts").read_text() == "precious"


def _spellings(run: Path, tmp_path: Path) -> dict[str, Path]:
    checkpoints = run / "checkpoints"
    (tmp_path / "link.ts").symlink_to(checkpoints / "best.pt")
    os.link(checkpoints / "best.pt", tmp_path / "hard.ts")
    torch.save({"fc.weight": torch.ones(2)}, tmp_path / "weights.bin")
    (tmp_path / "renamed.onnx").write_bytes((checkpoints / "last.pt").read_bytes())
    return {
        "dotdot": checkpoints / ".." / "checkpoints" / "best.pt",
        "symlink": tmp_path / "link.ts",
        "hardlink": tmp_path / "hard.ts",
        "other_checkpoint": checkpoints / "last.pt",
        "new_pt_in_checkpoints": checkpoints / "export.pt",
        "state_dict": tmp_path / "weights.bin",
        "renamed_checkpoint": tmp_path / "renamed.onnx",
    }


@pytest.mark.parametrize(
    "spelling",
    ["dotdot", "symlink", "hardlink", "other_checkpoint", "new_pt_in_checkpoints", "state_dict",
     "renamed_checkpoint"],
)  # fmt: skip
def test_an_export_never_overwrites_a_checkpoint_even_with_overwrite(
    quick_run, tmp_path, spelling: str
) -> None:
    from cnn_train.export import export

    target = _spellings(quick_run, tmp_path)[spelling]
    before = folder_bytes(quick_run / "checkpoints"), folder_bytes(tmp_path)
    with pytest.raises(UserError, match="checkpoint") as raised:
        export(str(quick_run / "checkpoints" / "best.pt"), "safetensors", str(target),
               overwrite=True)  # fmt: skip
    assert "\n" not in str(raised.value)
    assert (folder_bytes(quick_run / "checkpoints"), folder_bytes(tmp_path)) == before


def test_an_export_never_replaces_a_device(quick_run) -> None:
    from cnn_train.export import export

    best = str(quick_run / "checkpoints" / "best.pt")
    with pytest.raises(UserError, match="is not a regular file"):
        export(best, "torchscript", "/dev/null", overwrite=True)
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf")])
def test_export_tolerance_must_be_finite_and_not_negative(quick_run, tmp_path, tolerance) -> None:
    from cnn_train.export import export

    best = str(quick_run / "checkpoints" / "best.pt")
    with pytest.raises(UserError, match="tolerance must be a finite number >= 0"):
        export(best, "torchscript", str(tmp_path / "m.ts"), tolerance)
    assert not (tmp_path / "m.ts").exists()


KILLED_EXPORT = """
import sys, time, torch
from cnn_train.export import export

def save_half(self, path, *args, **kwargs):
    with open(path, "wb") as handle:
        handle.write(b"PK half an archive")
        handle.flush()
    open(sys.argv[3], "w").close()
    time.sleep(600)

torch.jit.ScriptModule.save = save_half
export(sys.argv[1], "torchscript", sys.argv[2], overwrite=True)
"""


@pytest.mark.parametrize("existing", [True, False])
def test_a_killed_export_never_leaves_a_truncated_output(quick_run, tmp_path, existing) -> None:
    import sys

    target, ready = tmp_path / "good.ts", tmp_path / "ready"
    if existing:
        target.write_bytes(b"the previous good export")
    best = quick_run / "checkpoints" / "best.pt"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_EXPORT, str(best), str(target), str(ready)]
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline:
            assert process.poll() is None
            time.sleep(0.05)
        assert ready.exists()
    finally:
        process.kill()
        process.wait()
    if existing:
        assert target.read_bytes() == b"the previous good export"
    else:
        assert not target.exists()


# --- Checkpoints are validated before anything is allocated -----------------------------------


def _tampered(run: Path, tmp_path: Path, change) -> Path:
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    change(state)
    path = tmp_path / "tampered.pt"
    torch.save(state, path)
    return path


TAMPERING = {
    "huge_head": (lambda s: s["config"]["model"].update(num_classes=10**9), "model.num_classes"),
    "huge_images": (lambda s: s["preprocessing"].update(image_size=100_000), "image_size"),
    "nan_std": (lambda s: s["preprocessing"].update(std=[float("nan")] * 3), "std"),
    "names_and_head_differ": (
        lambda s: s["config"]["model"].update(num_classes=5),
        "model.num_classes=5 but it names 10 classes",
    ),
    "head_and_weights_differ": (
        lambda s: (
            s["config"]["model"].update(num_classes=20),
            s.update(class_names=list("abcdefghijklmnopqrst")),
        ),
        "do not fit",
    ),
    "missing_key": (lambda s: s.pop("preprocessing"), "lacks preprocessing"),
    "unknown_model": (lambda s: s["config"]["model"].update(name="vgg17"), "vgg17"),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
@pytest.mark.parametrize("tool", ["predict", "export"])
def test_a_tampered_checkpoint_is_refused_before_a_model_is_built(
    quick_run, tmp_path, monkeypatch, tampering: str, tool: str
) -> None:
    import cnn_train.inference as inference
    from cnn_train.export import export
    from cnn_train.predict import predict

    change, expected = TAMPERING[tampering]
    path = _tampered(quick_run, tmp_path, change)
    real_build = inference.build_from_config

    def meta_only(model_cfg, *args, **kwargs):
        assert torch.empty(0).is_meta, "a model was built with real tensors"
        return real_build(model_cfg, *args, **kwargs)

    monkeypatch.setattr(inference, "build_from_config", meta_only)
    write_image(tmp_path / "a.png", "RGB", seed=0)
    with pytest.raises(UserError, match=expected) as raised:
        if tool == "predict":
            predict(str(path), str(tmp_path / "a.png"))
        else:
            export(str(path), "torchscript", str(tmp_path / "m.ts"))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("tampering", "scripts"),
    [
        ("huge_head", ("cnn-predict", "cnn-eval")),
        ("huge_images", ("cnn-predict",)),  # cnn-eval reads the config's data, not the record
        ("missing_key", ("cnn-predict", "cnn-eval")),
    ],
)
def test_the_tools_refuse_a_tampered_checkpoint_in_one_line(
    quick_run, tmp_path, tampering: str, scripts: tuple[str, ...]
) -> None:
    path = _tampered(quick_run, tmp_path, TAMPERING[tampering][0])
    write_image(tmp_path / "a.png", "RGB", seed=0)
    for script in scripts:
        extra = ["images=a.png"] if script == "cnn-predict" else []
        done = run_cli(script, f"checkpoint={path}", *extra, cwd=tmp_path)
        assert TAMPERING[tampering][1].split()[0] in one_error_line(done)


# --- prepare_imagenet_val.py: wnids are plain names, nothing is overwritten ----------------------


def _prepare_val(tmp_path: Path, labels: list[str]):
    import runpy

    val = tmp_path / "val"
    val.mkdir()
    for index in range(len(labels)):
        write_image(val / f"ILSVRC2012_val_{index + 1:08d}.JPEG", "RGB", seed=index)
    lines = [f"ILSVRC2012_val_{i + 1:08d}.JPEG {wnid}" for i, wnid in enumerate(labels)]
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    script = Path(__file__).resolve().parents[1] / "scripts" / "prepare_imagenet_val.py"
    main = runpy.run_path(str(script))["main"]
    return val, lambda: main([str(val), "--labels", str(tmp_path / "labels.txt")])


@pytest.mark.parametrize("wnid", ["../../precious", "..", ".hidden", "a/b", "/abs", "x\x07y"])
def test_a_wnid_that_is_not_a_plain_name_moves_nothing(tmp_path: Path, wnid: str) -> None:
    (tmp_path / "precious").write_text("keep me")
    val, run = _prepare_val(tmp_path, ["n01440764", wnid])
    before = sorted(path.name for path in val.iterdir())
    with pytest.raises(SystemExit, match="not a plain folder name"):
        run()
    assert sorted(path.name for path in val.iterdir()) == before
    assert (tmp_path / "precious").read_text() == "keep me"


def test_prepare_imagenet_val_never_overwrites_a_file(tmp_path: Path) -> None:
    val, run = _prepare_val(tmp_path, ["n01440764", "n01443537"])
    (val / "n01443537").mkdir()
    (val / "n01443537" / "ILSVRC2012_val_00000002.JPEG").write_text("already sorted")
    with pytest.raises(SystemExit, match="already exists"):
        run()
    assert (val / "n01443537" / "ILSVRC2012_val_00000002.JPEG").read_text() == "already sorted"
    assert (val / "ILSVRC2012_val_00000001.JPEG").is_file()
