"""The command line is an allowlist, values Hydra cannot parse are one line, folders never clash
and sweeps keep going: classes closed by construction, each tried with cases beyond the repros."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from cnn_train.command_line import HYDRA_KEYS, check_command_line, help_text, quote
from cnn_train.errors import UserError
from cnn_train.folders import NAME_LIMIT, job_folder, new_folder
from cnn_train.sweep import SweepSummary, write_result
from tests.helpers import QUICK, compose_config, run_cli
from tests.helpers.cli_errors import SCRIPTS_AND_ARGS

EVIL = 'open("IMPORTED", "w").write("evil.py ran")\nprint("The Zen of Python")\n'


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def check(*arguments: str, config: str = "train") -> list[str]:
    return check_command_line(config, list(arguments), hydra_flags=config in ("train", "eval"))


# 1. The allowlist, in every console script, before Hydra runs.


@pytest.mark.parametrize("script", [*SCRIPTS_AND_ARGS, "python -m cnn_train.cli"])
def test_an_ext_logging_stream_is_refused_before_anything_is_imported(
    tmp_path: Path, script: str
) -> None:
    (tmp_path / "evil.py").write_text(EVIL)
    override = "hydra.job_logging.handlers.console.stream=ext://evil"
    if script.startswith("python"):
        command = [sys.executable, "-m", "cnn_train.cli", *QUICK, override]
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    else:
        done = run_cli(script, *SCRIPTS_AND_ARGS[script], override, cwd=tmp_path)
    line = one_error_line(done)
    assert "hydra.job_logging.handlers.console.stream" in line
    assert "cannot name code to run" in line
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "outputs").exists()


def test_ext_values_anywhere_and_launcher_shell_lines_are_refused(tmp_path: Path) -> None:
    zen = run_cli("cnn-train", *QUICK, "tracking.comment=ext://this", cwd=tmp_path)
    assert "tracking.comment" in one_error_line(zen) and "Zen" not in zen.stdout + zen.stderr
    setup = ["-m", "hydra/launcher=slurm", 'hydra.launcher.setup=["touch X"]']
    line = one_error_line(run_cli("cnn-train", *QUICK, *setup, cwd=tmp_path))
    assert "hydra.launcher.setup" in line
    assert not (tmp_path / "X").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["hydra.launcher.srun_args=[--pty,bash]"], "hydra.launcher.srun_args"),
        (["+hydra.launcher.additional_parameters.wrap=touch X"], "additional_parameters"),
        (["hydra.launcher.submitit_folder=/tmp/elsewhere"], "hydra.launcher.submitit_folder"),
        (["hydra.sweeper.storage=sqlite:////tmp/x.db"], "hydra.sweeper.storage"),
        (["hydra.sweeper.custom_search_space=os.system"], "hydra.sweeper.custom_search_space"),
        (["++hydra.job_logging.handlers.file.filename=/tmp/x"], "hydra.job_logging.handlers"),
        (["hydra.job_logging.root.handlers=[]"], "hydra.job_logging.root.handlers"),
        (["hydra.output_subdir=null"], "hydra.output_subdir"),
        (["hydra.job.chdir=true"], "hydra.job.chdir"),
        (["hydra.job.env_set.LD_PRELOAD=/tmp/x.so"], "hydra.job.env_set"),
        (["hydra/job_logging=disabled"], "hydra/job_logging"),
        (["hydra/callbacks=x"], "hydra/callbacks"),
        (["~hydra.callbacks.sweep_summary"], "hydra.callbacks.sweep_summary"),
        (["+model@hydra.callbacks.x=vgg16"], "model@hydra.callbacks.x"),
        (["+_global_.hydra.callbacks.x.y=1"], "hydra.callbacks.x.y"),
        (["hydra.run={dir:x}"], "hydra.run"),
        (["data.root=[a,{b:EXT://sys.stdout}]"], "data.root"),
        (["++x._target_=os.system"], "x._target_"),
        (["hydra.launcher.partition='gpu\ntouch X'"], "hydra.launcher.partition"),
        (["hydra.launcher.partition='gpu;touch X'"], "hydra.launcher.partition"),
        (["hydra.launcher.timeout_min=${oc.env:HOME}"], "hydra.launcher.timeout_min"),
        (["hydra.searchpath=file:///x"], "hydra.searchpath"),
        (["hydra.searchpath=[pkg://evil]"], "hydra.searchpath"),
        (["--experimental-rerun", "config.pickle"], "--experimental-rerun"),
        (["--exp", "config.pickle"], "--exp"),
        (["--config-name", "eval"], "--config-name"),
        (["-cp", "/tmp"], "-cp"),
    ],
)
def test_anything_off_the_allowlist_is_one_line_naming_it(arguments: list[str], named: str):
    with pytest.raises(UserError) as refused:
        check("-m", *arguments)
    assert named in str(refused.value) and "\n" not in str(refused.value)


@given(st.lists(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), min_size=1, max_size=4))
@settings(max_examples=60, deadline=None)
def test_no_hydra_key_off_the_allowlist_is_accepted(parts: list[str]) -> None:
    """By construction: any key under hydra. not listed is refused, whatever its value."""
    key = ".".join(["hydra", *parts])
    if key in HYDRA_KEYS:
        return
    for prefix in ("", "+", "++"):
        with pytest.raises(UserError, match="is not accepted"):
            check(f"{prefix}{key}=1")


def test_the_documented_settings_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    accepted = [
        "-m", "--cfg", "job", "--resolve", "-cd", str(tmp_path),
        f"hydra.searchpath=[file://{tmp_path}]", "hydra.run.dir=outputs/${now:%H}",
        "hydra.sweep.dir=sweeps/a", "hydra.sweep.subdir=${hydra.job.num}", "hydra.verbose=true",
        "hydra.job_logging.root.level=DEBUG", "hydra/launcher=slurm", "hydra.launcher.nodes=2",
        "hydra.launcher.gpus_per_node=0", "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=60", "hydra.launcher.partition=gpu",
        "hydra.launcher.signal_delay_s=120", "hydra/sweeper=lr_wd",
        "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=50",
        "hydra.sweeper.sampler.seed=3", "hydra.sweeper.direction=maximize",
        "experiment=resnet34_cifar10", "optimizer.lr=0.1,0.01",
    ]  # fmt: skip
    assert check(*accepted) == accepted


# 2. Values Hydra cannot parse, sweep folder names passed back, options that do not exist.


@pytest.mark.parametrize(
    ("argument", "key", "value"),
    [
        ("data.root=données", "data.root", "données"),
        ("resume=outputs/multirun/d/t/0_optimizer.lr=0.01", "resume", None),
        ("resume=outputs/multirun/d/t/0_model=alexnet,optimizer.lr=0.1", "resume", None),
        ("model.weights=/w/it's a=b.pt", "model.weights", None),
        ("++data.root=/d/x=1", "data.root", "/d/x=1"),
    ],
)
def test_path_values_pass_as_they_are(argument: str, key: str, value: str | None) -> None:
    (checked,) = check(argument)
    cfg = compose_config("train", [*QUICK, checked])
    assert OmegaConf.select(cfg, key) == (value or argument.partition("=")[2])


def test_a_value_hydra_cannot_parse_is_one_line_with_the_fix(tmp_path: Path) -> None:
    line = one_error_line(run_cli("cnn-train", "data.name=a=b", cwd=tmp_path))
    assert "quote the value" in line and "data.name='a=b'" in line
    line = one_error_line(run_cli("cnn-summary", "optimizer.lr=0.1,0.2", cwd=tmp_path))
    assert "is a sweep" in line and "-m" in line


@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30))
@settings(max_examples=100, deadline=None)
def test_quoting_keeps_every_value(value: str) -> None:
    if "${" in value:  # an interpolation stays one, quoted or not
        return
    assert OverridesParser.create().parse_override(f"x={quote(value)}").value() == value


def test_an_option_that_does_not_exist_is_one_line_listing_the_options(tmp_path: Path) -> None:
    done = run_cli("cnn-train", "experiment=resnet34_imagenet_typo", cwd=tmp_path)
    line = one_error_line(done)
    assert "experiment=resnet34_imagenet_typo" in line and "resnet34_imagenet," in line
    assert not (tmp_path / "outputs").exists()
    for arguments in (["-m", "experiment=resnet34_cifar10,nope"], ["data=../../train"]):
        with pytest.raises(UserError, match="no such option"):
            check(*arguments)


# 3. Folder names.


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ("optimizer.lr=0.01", "0_optimizer.lr=0.01"),
        ("model.weights=../../x,y", "0_model.weights=%2E%2E%2F%2E%2E%2Fx,y"),
        ("data.root=/data/a", "0_data.root=%2Fdata%2Fa"),
        ("tracking.comment=a\nb\rc\x1b", "0_tracking.comment=a%0Ab%0Dc%1B"),
    ],
)
def test_a_job_folder_is_readable_and_escapes_only_what_it_must(overrides, expected) -> None:
    assert job_folder(0, overrides) == expected


@given(st.integers(0, 10**6), st.text(max_size=600))
@settings(max_examples=200, deadline=None)
def test_a_job_folder_is_one_name_under_the_limit_whatever_the_values(number, overrides):
    name, whole = job_folder(number, overrides), f"{number}_{overrides}".encode()
    assert "/" not in name and ".." not in name and name.isprintable()
    assert len(name.encode()) <= NAME_LIMIT and name.startswith(f"{number}_")
    if len(whole) * 3 <= NAME_LIMIT:  # escaping at most triples a character: nothing was cut
        assert len(name.encode()) >= len(whole)


def test_a_long_job_folder_is_shortened_with_a_hash_of_the_whole_name() -> None:
    overrides = ",".join(f"trainer.key{index}=value{index}" for index in range(14))
    first, second = job_folder(0, overrides), job_folder(0, overrides + "x")
    assert len(first.encode()) <= NAME_LIMIT and first.startswith("0_trainer.key0=value0,")
    assert first != second and first[:-11] == second[:-11]


def test_tools_started_together_get_folders_of_their_own(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # restored after the test
    for config in ("train", "eval"):
        folders = set()
        for _ in range(3):
            cfg = compose_config(config, [], with_hydra=True)
            HydraConfig.instance().set_config(cfg)  # as Hydra does before it resolves the folder
            folders.add(cfg.hydra.run.dir)
            assert cfg.hydra.run.dir in folders  # resolved once per config
        assert len(folders) == 3 and all(Path(folder).is_dir() for folder in folders)
    names = [Path(new_folder("runs", "08-40-12_a-b")).name for _ in range(3)]
    assert names == ["08-40-12_a-b", "08-40-12_a-b-2", "08-40-12_a-b-3"]
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "1")  # ranks of one torchrun job share a folder
    assert new_folder("runs", "r") == new_folder("runs", "r") == "runs/r"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "cannot create the folder outputs/"),
        (["-m", "seed=1,2"], "cannot create the folder outputs/multirun/"),
        (["hydra.run.dir=outputs/run"], "cannot use outputs/run: Not a directory"),
    ],
)
def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path, arguments, message) -> None:
    (tmp_path / "outputs").write_text("a file in the way")
    line = one_error_line(run_cli("cnn-train", *QUICK, *arguments, cwd=tmp_path))
    assert message in line


def test_a_sweep_folder_used_again_sums_up_only_its_own_jobs(tmp_path: Path) -> None:
    def job(name: str, status: str | None, *, earlier: bool = False) -> None:
        overrides = tmp_path / name / ".hydra" / "overrides.yaml"
        overrides.parent.mkdir(parents=True, exist_ok=True)
        overrides.write_text(f"- seed={name[0]}\n")
        if status:
            write_result(tmp_path / name, {"status": status, "best_val_acc1": 0.5})
        for path in (overrides, tmp_path / name / "result.json"):
            if earlier and path.exists():
                os.utime(path, ns=(10**18, 10**18))  # an earlier multirun's files

    job("0_seed=0", "completed", earlier=True)
    job("1_seed=1", "failed", earlier=True)
    summary = SweepSummary()
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "launcher": {}}})
    summary.on_multirun_start(config)
    job("0_seed=0", None)  # this multirun's job 0 starts over the old one and fails early
    job("2_seed=2", "completed")
    with pytest.raises(SystemExit):
        summary.on_multirun_end(config)
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [(row["job"], row["status"]) for row in rows] == [
        ("0_seed=0", "failed"),
        ("2_seed=2", "completed"),
    ]


def test_sweep_values_never_leave_the_sweep_folder(tmp_path: Path) -> None:
    """Relative and absolute paths as swept values: every job folder is a child of the sweep
    folder, the user's files stay as they were, and summary.csv has a row per job."""
    cwd = tmp_path / "a" / "b" / "c" / "d" / "e"
    cwd.mkdir(parents=True)
    project = tmp_path / "project"
    project.mkdir()
    (project / "result.json").write_text("mine")
    long_root = "/" + "x" * 200 + "/data"
    sweep = [
        "-m", *QUICK, "model.weights=../../../../../project,nothing.pt",
        f"data.root=/abs/data,{long_root}", "hydra.sweep.dir=sweep",
    ]  # fmt: skip
    done = run_cli("cnn-train", *sweep, cwd=cwd)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert sorted(path.name for path in project.iterdir()) == ["result.json"]
    assert (project / "result.json").read_text() == "mine"
    jobs = [path for path in (cwd / "sweep").iterdir() if path.is_dir()]
    assert len(jobs) == 4 and all((job / ".hydra" / "overrides.yaml").is_file() for job in jobs)
    assert all(len(job.name.encode()) <= NAME_LIMIT for job in jobs)
    rows = list(csv.DictReader((cwd / "sweep" / "summary.csv").open()))
    assert sorted(row["job"] for row in rows) == sorted(job.name for job in jobs)
    assert "4 of 4 jobs failed" in done.stderr


def test_result_json_goes_to_the_folder_the_run_wrote_to(tmp_path: Path) -> None:
    first = run_cli("cnn-train", *QUICK, "trainer.max_steps=1", "hydra.run.dir=a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "a" / "result.json").unlink()
    resume = ["resume=a", "trainer.max_steps=2", "hydra.run.dir=b"]
    resumed = run_cli("cnn-train", *QUICK, *resume, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["status"] == "completed" and Path(result["run_dir"]).name == "a"


# 4. Sweeps that keep going.


def test_an_optuna_search_records_failed_trials_and_goes_on(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    search = ["-m", "hydra/sweeper=lr_wd", "hydra.sweeper.n_trials=3", "trainer.max_steps=1"]
    done = run_cli("cnn-train", *search, *QUICK, "optimizer.lr=choice(0.05,-1)", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (summary,) = (tmp_path / "outputs" / "multirun").glob("*/*/summary.csv")
    statuses = [row["status"] for row in csv.DictReader(summary.open())]
    assert len(statuses) == 3 and {"completed", "failed"} == set(statuses)
    assert "Best value: " in done.stdout + done.stderr


def test_an_optuna_search_without_a_completed_trial_ends_in_one_line(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    search = ["-m", "hydra/sweeper=lr_wd", "hydra.sweeper.n_trials=2", "optimizer.lr=-1"]
    done = run_cli("cnn-train", *search, *QUICK, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the sweep stopped") and "2 of 2 jobs failed" in last
    (summary,) = (tmp_path / "outputs" / "multirun").glob("*/*/summary.csv")
    assert [row["status"] for row in csv.DictReader(summary.open())] == ["failed", "failed"]


def test_an_sbatch_rejection_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rejection = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\necho '{rejection}' >&2\nexit 1\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    launcher = ["-m", "hydra/launcher=slurm", "hydra.launcher.partition=nope"]
    done = run_cli("cnn-train", *launcher, *QUICK, cwd=tmp_path, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the SLURM launcher failed") and "Invalid partition" in last


# 5. Help.


@pytest.mark.parametrize("script", ["cnn-train", "cnn-eval"])
def test_help_opens_with_the_tool_and_lists_only_user_groups(tmp_path: Path, script: str):
    done = run_cli(script, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{script}: ")
    assert "powered by Hydra" not in done.stdout and "schema/" not in done.stdout
    assert "hydra/launcher: " in done.stdout and "hydra.launcher.{" in done.stdout
    assert "device: " in done.stdout


def test_train_help_lists_the_groups_and_the_composed_config() -> None:
    text = help_text("train", ["--help", "optimizer=adamw"])
    for group in ("model", "data", "optimizer", "scheduler", "device", "experiment"):
        assert f"\n  {group}: " in text
    assert "model_recipe" not in text and "name: adamw" in text
