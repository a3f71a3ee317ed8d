"""What the command line may say, checked before Hydra reads it (every console script).

The command line is data. Under `hydra.` it accepts only the keys in HYDRA_KEYS and the groups in
HYDRA_GROUPS, each with a value of a kind that cannot name code, a shell line or a file to
write; any other `hydra.` key, a `_target_` and an `ext://` value anywhere are refused in one
line naming the key. Flags are an allowlist too. A value Hydra cannot parse is one line with the
fix (values of the path keys in PATH_KEYS are quoted here, so a sweep's job folder, with its
`=` and `,`, passes back as `resume=` as it is), and a config group option that does not
exist (the optional `experiment` too) is one line listing the options.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from cnn_train.errors import UserError, first_line

CONFIG_MODULE = "cnn_train.configs"


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _name(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.:+-]+", value) is not None


def _name_or_null(value: Any) -> bool:
    return value is None or _name(value)


def _text(value: Any) -> bool:
    return isinstance(value, str) and value.isprintable()


def _config_folders(value: Any) -> bool:
    """`file://` folders only: Hydra reads their YAML files. A `pkg://name` entry would import
    the module `name`, from the working folder too (`python -m`, torchrun)."""
    return isinstance(value, list) and all(
        _text(item) and item.startswith("file://") for item in value
    )


def _verbose(value: Any) -> bool:
    return (
        isinstance(value, bool)
        or _name(value)
        or (isinstance(value, list) and all(_name(item) for item in value))
    )


def _level(value: Any) -> bool:
    return value in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _direction(value: Any) -> bool:
    return value in ("minimize", "maximize")


Kind = tuple[Callable[[Any], bool], str]
WHOLE: Kind = (_whole, "a whole number >= 0")
NAME: Kind = (_name_or_null, "a name (letters, digits, . _ : + -) or null")
FOLDER: Kind = (_text, "a folder path")
SEARCHPATH: Kind = (_config_folders, "a list of config folders, [file:///abs/path,...]")
LAUNCHER_COUNTS = (
    "nodes", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb", "timeout_min",
    "signal_delay_s", "max_num_timeout", "array_parallelism",
)  # fmt: skip
# The keys under `hydra.` that a user needs and that cannot name code, a shell line or a file to
# write (the run and sweep folders are the user's own choice of where to write).
HYDRA_KEYS: dict[str, Kind] = {
    "hydra.run.dir": FOLDER,
    "hydra.sweep.dir": FOLDER,
    "hydra.sweep.subdir": FOLDER,
    "hydra.searchpath": SEARCHPATH,
    "hydra.verbose": (_verbose, "true, false or logger names"),
    "hydra.job_logging.root.level": (_level, "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    # hydra/launcher=slurm (configs/hydra/launcher/slurm.yaml): the job's resources
    **{f"hydra.launcher.{key}": WHOLE for key in LAUNCHER_COUNTS},
    **{f"hydra.launcher.{key}": NAME for key in ("partition", "qos", "account", "constraint")},
    # hydra/sweeper=lr_wd (configs/hydra/sweeper/lr_wd.yaml) and the basic sweeper: the search
    "hydra.sweeper.n_trials": WHOLE,
    "hydra.sweeper.n_jobs": WHOLE,
    "hydra.sweeper.max_batch_size": WHOLE,
    "hydra.sweeper.direction": (_direction, "minimize or maximize"),
    "hydra.sweeper.study_name": NAME,
    "hydra.sweeper.sampler.seed": WHOLE,
}
# Config groups under hydra/ whose options (installed configs, trusted) the command line picks.
HYDRA_GROUPS = ("hydra/launcher", "hydra/sweeper", "hydra/sweeper/sampler")
# Keys whose values are file or folder paths: quoted before Hydra parses them unless they are
# already a quoted string, a list or a dict.
PATH_KEYS = frozenset(
    {"resume", "checkpoint", "data.root", "model.weights", "images", "output"}
    | {"hydra.run.dir", "hydra.sweep.dir"}
)
# Hydra's own flags that cnn-train and cnn-eval accept (True: takes a value). Not accepted:
# --config-path/--config-name (another primary config), --experimental-rerun (unpickles a file),
# --shell-completion.
HYDRA_FLAGS = {
    "-h": False, "--help": False, "--hydra-help": False, "--version": False,
    "-m": False, "--multirun": False, "-r": False, "--run": False, "--resolve": False,
    "-c": True, "--cfg": True, "-p": True, "--package": True,
    "-cd": True, "--config-dir": True, "-i": False, "--info": False,
}  # fmt: skip
INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
TOOL_FLAGS = {"-h": False, "--help": False}
CODE_TEXT = ("_target_", "ext://")


def accepted_hydra_settings(separator: str = ", ") -> str:
    """The allowlist in words, for `--help` (one kind a line) and tests."""
    launcher = [key.removeprefix("hydra.launcher.") for key in HYDRA_KEYS if ".launcher." in key]
    sweeper = [key.removeprefix("hydra.sweeper.") for key in HYDRA_KEYS if ".sweeper." in key]
    others = [key for key in HYDRA_KEYS if ".launcher." not in key and ".sweeper." not in key]
    return separator.join(
        [
            ", ".join(others),
            ", ".join(f"{group}=" for group in HYDRA_GROUPS),
            f"hydra.launcher.{{{','.join(sorted(launcher))}}}",
            f"hydra.sweeper.{{{','.join(sorted(sweeper))}}}",
        ]
    )


def refused(key: str, why: str = "") -> UserError:
    """The one line for an override the allowlist does not hold."""
    return UserError(
        f"{key}{why} is not accepted: the command line cannot name code to run, shell commands "
        "or files to write; under hydra. it takes only the run and sweep folders, "
        "hydra.searchpath, verbosity, and hydra/launcher= and hydra/sweeper= with their resource "
        "and search settings (--help lists them); put other settings in config files of your "
        "own (hydra.searchpath, --config-dir)"
    )


def split_flags(arguments: list[str], flags: dict[str, bool]) -> tuple[list[int], str | None]:
    """The positions of the overrides among `arguments`, and the `--config-dir` if any.

    Only the flags in `flags` are accepted, each spelt out (argparse would take `--exp` for
    `--experimental-rerun`); a flag's value is the next argument or follows `=`.
    """
    positions, config_dir, index = [], None, 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if not argument.startswith("-"):
            positions.append(index - 1)
            continue
        flag, equals, inline = argument.partition("=")
        if flag not in flags or (equals and not flag.startswith("--")):
            raise UserError(
                f"{argument} is not accepted: the flags are {', '.join(flags)}; "
                "overrides are key=value"
            )
        value = inline if equals else None
        if flags[flag] and value is None:
            if index == len(arguments):
                raise UserError(f"{flag} needs a value")
            value, index = arguments[index], index + 1
        elif flag in ("-i", "--info") and index < len(arguments):
            index += arguments[index] in INFO_CHOICES  # its optional value
        if flag in ("-cd", "--config-dir"):
            config_dir = value
    return positions, config_dir


def quote(value: str) -> str:
    """`value` as a Hydra quoted string: backslashes before a quote or the end doubled."""
    escaped = re.sub(r"(\\+)(?='|$)", lambda match: match.group(1) * 2, value)
    return "'" + escaped.replace("'", "\\'") + "'"


def quote_path_value(argument: str) -> str:
    """`resume=<folder named a=1,b=2>` -> `resume='<folder named a=1,b=2>'`: path keys' values
    are paths, not lists, sweeps or Hydra syntax (a comma without `=` still sweeps)."""
    key, _, value = argument.partition("=")
    if key.lstrip("+") not in PATH_KEYS or not value or value[0] in "'\"[{":
        return argument
    if "=" in value or not value.isascii() or not _parses(argument):
        return f"{key}={quote(value)}"
    return argument


def _parses(argument: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        OverridesParser.create().parse_override(argument)
    except HydraException:
        return False
    return True


def _parse(parser: Any, argument: str) -> Any:
    from hydra.errors import HydraException

    try:
        return parser.parse_override(argument)
    except HydraException as error:
        key, equals, value = argument.partition("=")
        if not equals:
            raise UserError(f"{argument} is not an override: write key=value") from None
        reason = first_line(error).removeprefix("Error parsing override ")
        raise UserError(
            f'cannot read {argument}: {reason}; quote the value: "{key}={quote(value)}"'
        ) from None


def _values(override: Any) -> list[Any]:
    """The value(s) an override sets: one, or each of a choice sweep."""
    if override.is_delete():
        return []
    if override.is_choice_sweep() or override.is_range_sweep():
        return list(override.sweep_iterator())
    if override.is_sweep_override():  # glob and interval: options that exist, numbers
        return []
    return [override.value()]


def check_hydra_override(override: Any) -> None:
    """Refuse an override that reaches into `hydra.` unless it is on the allowlist."""
    key = override.key_or_group.removeprefix("_global_.")
    package = (override.package or "").removeprefix("_global_").lstrip(".")
    into_hydra = re.match(r"hydra($|[./])", key) or re.match(r"hydra($|\.)", package)
    if not into_hydra:
        return
    if override.is_delete() or override.package is not None:
        raise refused(override.input_line)
    if "/" in key:
        kind: Kind | None = (_name, "an option name") if key in HYDRA_GROUPS else None
    else:
        kind = HYDRA_KEYS.get(key)
    if kind is None:
        raise refused(key)
    check, words = kind
    values = _values(override)
    if override.is_sweep_override() or not all(check(value) for value in values):
        raise UserError(f"{override.input_line} is not accepted: {key} takes {words}")


def check_group_options(loader: Any, config_name: str, overrides: list[Any], search: list[str]):
    """Every group option named exists (Hydra skips a missing one of an optional group)."""
    for override in overrides:
        group = override.key_or_group
        if "." in group or override.is_delete():
            continue
        options = loader.get_group_options(group, config_name=config_name, overrides=search)
        if not options:
            continue  # not a group: a plain key
        named = []
        for value in _values(override):
            named.extend(value if isinstance(value, list) else [value])
        missing = [str(name) for name in named if name is not None and name not in options]
        if missing:
            raise UserError(
                f"{group}={missing[0]}: no such option of {group}; the options are "
                f"{', '.join(options)}"
            )


def _searchpath(overrides: list[Any], config_dir: str | None) -> list[str]:
    """The `hydra.searchpath` override Hydra will use, with `--config-dir` in it."""
    folders = [f"file://{os.path.abspath(config_dir)}"] if config_dir else []
    for override in overrides:
        if override.key_or_group == "hydra.searchpath" and not override.is_delete():
            folders.extend(override.value())
    return (
        [f"hydra.searchpath=[{','.join(quote(folder) for folder in folders)}]"] if folders else []
    )


def shown(text: str) -> str:
    """`text` with its control characters escaped (`\\n`): an error stays one line."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def check_command_line(config_name: str, arguments: list[str], *, hydra_flags: bool) -> list[str]:
    """Check a console script's arguments; return them for Hydra: flags first, path values
    quoted.

    Raises UserError, one line, for anything not accepted.
    """
    try:
        return _checked(config_name, arguments, hydra_flags)
    except UserError as error:
        raise UserError(shown(str(error))) from None


def _checked(config_name: str, arguments: list[str], hydra_flags: bool) -> list[str]:
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    positions, config_dir = split_flags(arguments, HYDRA_FLAGS if hydra_flags else TOOL_FLAGS)
    checked = list(arguments)
    for position in positions:
        argument = arguments[position]
        for text in CODE_TEXT:
            if text in argument.lower():
                raise refused(argument.partition("=")[0], f" (naming {text})")
        checked[position] = quote_path_value(argument)
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)
        overrides = [_parse(parser, checked[position]) for position in positions]
        multirun = {"-m", "--multirun"} & set(arguments)
        for override in overrides:
            check_hydra_override(override)
            if override.is_sweep_override() and not multirun:
                raise UserError(
                    f"{override.input_line} is a sweep (one job per value): add -m to run it, or "
                    f"for one value write a list {override.key_or_group}=[...] or a quoted string"
                )
        search = _searchpath(overrides, config_dir)
        check_group_options(loader, config_name, overrides, search)
    # Flags first: Hydra's argparse refuses a flag after the overrides (`... lr=1,2 -m`).
    flags = [argument for index, argument in enumerate(arguments) if index not in positions]
    return [*flags, *(checked[position] for position in positions)]


# Groups the config picks by itself (a model's recipe for its optimizer): not a user's choice.
AUTOMATIC_GROUPS = ("model_recipe",)


def help_text(config_name: str, arguments: list[str]) -> str:
    """`cnn-train --help`: the config's `hydra.help.template` with the flags, the config groups
    a user picks (with their options), the accepted `hydra.` settings and the composed config."""
    from string import Template

    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    positions, config_dir = split_flags(arguments, HYDRA_FLAGS)
    overrides = [arguments[position] for position in positions]
    search = [*_searchpath([], config_dir), *(o for o in overrides if o.startswith("hydra.sea"))]
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        chosen = [group for group in cfg.hydra.runtime.choices if "/" not in group]
        groups = [group for group in chosen if group not in AUTOMATIC_GROUPS]
        lines = [
            f"  {group}: "
            + ", ".join(loader.get_group_options(group, config_name=config_name, overrides=search))
            for group in [*sorted(groups), *HYDRA_GROUPS]
        ]
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return Template(str(cfg.hydra.help.template)).safe_substitute(
        FLAGS=" ".join(flag for flag in HYDRA_FLAGS if flag.startswith("--")),
        APP_CONFIG_GROUPS="\n".join(lines),
        HYDRA_SETTINGS=accepted_hydra_settings("\n  "),
        CONFIG=OmegaConf.to_yaml(task).rstrip(),
    )
