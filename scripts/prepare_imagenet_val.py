"""Sort ImageNet's flat validation folder into class folders: val/<wnid>/ILSVRC2012_val_*.JPEG.

The official val archive unpacks to 50,000 files in one folder; `data=imagenet` wants the
ImageFolder layout. The labels come from the devkit (ILSVRC2012_devkit_t12.tar.gz) or from a text
file with one "<file name> <wnid>" line per image.

    python scripts/prepare_imagenet_val.py /data/imagenet/val --devkit ILSVRC2012_devkit_t12.tar.gz
    python scripts/prepare_imagenet_val.py /data/imagenet/val --labels val_labels.txt

Wnids must be plain folder names (a label file is untrusted: `../x` would move images out of the
folder), and no existing file is ever overwritten: either is refused before anything moves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from torchvision.datasets.imagenet import load_meta_file, parse_devkit_archive


def devkit_labels(devkit: Path, images: list[Path]) -> dict[str, str]:
    """File name -> wnid from the devkit's ground truth (ordered like the sorted file names)."""
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(devkit, Path(scratch) / devkit.name)
        parse_devkit_archive(scratch, file=devkit.name)
        wnids = load_meta_file(scratch)[1]
    if len(wnids) != len(images):
        sys.exit(f"the devkit lists {len(wnids)} val images but the folder has {len(images)}")
    return {image.name: wnid for image, wnid in zip(images, wnids, strict=True)}


def file_labels(labels: Path) -> dict[str, str]:
    """File name -> wnid from "<file name> <wnid>" lines."""
    pairs = (line.split()[:2] for line in labels.read_text().splitlines() if line.strip())
    return {Path(name).name: wnid for name, wnid in pairs}


def is_plain_name(name: str) -> bool:
    """A folder name that stays inside the val folder: no separator, not `.`/`..` or hidden,
    no control characters."""
    separators = {os.sep, os.altsep or os.sep, "\\"}
    return (
        bool(name)
        and not name.startswith(".")
        and not any(separator in name for separator in separators)
        and name.isprintable()
    )


def plan_moves(
    val_dir: Path, images: list[Path], labels: dict[str, str]
) -> list[tuple[Path, Path]]:
    """(image, target) pairs; exits, having moved nothing, on a wnid that is not a plain folder
    name, a class folder that is a file or a link, or a target that exists."""
    wnids = sorted({labels[image.name] for image in images})
    bad = [wnid for wnid in wnids if not is_plain_name(wnid)]
    if bad:
        sys.exit(f"wnid {bad[0]!r} is not a plain folder name (e.g. n01440764); nothing was moved")
    for wnid in wnids:
        folder = val_dir / wnid
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            sys.exit(f"{folder} exists and is not a class folder; nothing was moved")
    moves = [(image, val_dir / labels[image.name] / image.name) for image in images]
    taken = [target for _, target in moves if os.path.lexists(target)]
    if taken:
        sys.exit(f"{taken[0]} already exists; nothing was moved or overwritten")
    return moves


def move_without_overwriting(source: Path, target: Path) -> None:
    """Move `source` to `target`, never replacing a file there (a hard link, then unlink)."""
    try:
        os.link(source, target)
    except FileExistsError:
        sys.exit(f"{target} already exists; it was not overwritten ({source} stays where it is)")
    except OSError:  # a file system without hard links
        if os.path.lexists(target):
            sys.exit(f"{target} already exists; it was not overwritten")
        os.rename(source, target)
        return
    source.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("val_dir", type=Path, help="the flat folder of ILSVRC2012_val_*.JPEG")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--devkit", type=Path, help="ILSVRC2012_devkit_t12.tar.gz")
    source.add_argument("--labels", type=Path, help='text file of "<file name> <wnid>" lines')
    args = parser.parse_args(argv)
    images = sorted(p for p in args.val_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not images:
        sys.exit(f"no image files directly in {args.val_dir} (already sorted into class folders?)")
    labels = devkit_labels(args.devkit, images) if args.devkit else file_labels(args.labels)
    missing = [image.name for image in images if image.name not in labels]
    if missing:
        sys.exit(f"{len(missing)} images have no label, e.g. {missing[0]}; nothing was moved")
    for image, target in plan_moves(args.val_dir, images, labels):
        target.parent.mkdir(exist_ok=True)
        move_without_overwriting(image, target)
    classes = len(set(labels[image.name] for image in images))
    print(f"moved {len(images)} images into {classes} class folders under {args.val_dir}")


if __name__ == "__main__":
    main()
