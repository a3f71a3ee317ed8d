"""Run and job folder names, as OmegaConf resolvers that the packaged configs name.

`${cnn_train.new_folder:PARENT,NAME}`: PARENT/NAME, or NAME-2, NAME-3... when it is taken. The
folder is claimed with an exclusive mkdir, so two tools started in the same second never share
one. `${cnn_train.job_folder:NUM,OVERRIDES}`: a sweep job's folder name, `NUM_OVERRIDES`, always
one file name inside the sweep folder whatever the values (a `/`, `..` or control character is
escaped), shortened with a hash of the whole name past the file-name limit; the full overrides
stay in the job's `.hydra/overrides.yaml` and in `summary.csv`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

from omegaconf import OmegaConf

from cnn_train.errors import UserError

NEW_FOLDER = "cnn_train.new_folder"
JOB_FOLDER = "cnn_train.job_folder"
NAME_LIMIT = 255  # bytes in one file name (ext4, XFS, btrfs, NFS)
HASH_CHARS = 10


def _escape_char(char: str) -> str:
    """`/` and what does not print (control, format and unassigned characters, line breaks,
    lone surrogates from undecodable bytes) as `%XX` of its UTF-8 bytes."""
    if char != "/" and char.isprintable():
        return char
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


def file_name(text: str) -> str:
    """`text` as one file name: `/`, `..` and characters that do not print escaped (`%2F`,
    `%2E%2E`, `%0A`), and past the limit the first part plus `~` and a hash of the whole name."""
    name = "".join(_escape_char(char) for char in text).replace("..", "%2E%2E")
    if name in ("", "."):
        name = "%2E" if name else "_"
    if len(name.encode()) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:HASH_CHARS]
    room = NAME_LIMIT - len(digest) - 1
    return f"{name.encode()[:room].decode(errors='ignore')}~{digest}"


def job_folder(number: int | str, overrides: str) -> str:
    """A sweep job's folder name: `<number>_<overrides>` (`0_optimizer.lr=0.01`)."""
    return file_name(f"{number}_{overrides}")


def new_folder(parent: str, name: str) -> str:
    """`parent/name`, or the first free `parent/name-N`; claimed (created) here.

    The ranks of one torchrun job each resolve the run folder; they must share it, so they take
    the name as it is (torchrun users pin `hydra.run.dir` anyway). A folder that cannot be
    created (read-only, a file in the way) is one UserError line.
    """
    base = Path(parent) / file_name(name)
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return str(base)
    candidates = (base.with_name(file_name(f"{base.name}-{n}")) for n in itertools.count(2))
    for candidate in itertools.chain([base], candidates):
        try:
            candidate.parent.mkdir(parents=True, exist_ok=True)
            candidate.mkdir()
        except FileExistsError:
            if candidate.parent.is_dir():
                continue
            error: OSError = NotADirectoryError(f"{candidate.parent} is a file")
        except OSError as failure:
            error = failure
        else:
            return str(candidate)
        raise UserError(
            f"cannot create the folder {candidate}: {error.strerror or error}; run from a "
            "folder you can write to, or pass hydra.run.dir=... (or hydra.sweep.dir=...)"
        )
    raise AssertionError("unreachable: the candidates never end")


def register_resolvers() -> None:
    """Make the resolvers known to OmegaConf (once per process; importing the configs does it).

    `new_folder` is cached per config, so the sweep folder the launcher made and each job's copy
    of the config (Hydra copies the cache, as for `${now:...}`) name the same folder.
    """
    if not OmegaConf.has_resolver(NEW_FOLDER):
        OmegaConf.register_new_resolver(NEW_FOLDER, new_folder, use_cache=True)
    if not OmegaConf.has_resolver(JOB_FOLDER):
        OmegaConf.register_new_resolver(JOB_FOLDER, job_folder)
