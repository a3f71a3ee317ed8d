"""A PNG of CIFAR-10 training images as each `data.auto_augment` policy trains on them.

`python scripts/augment_grid.py ../shared/data/cifar10-jpeg/train docs/augment_grids.png`

One row per policy (and random erasing), the same 16 images in every row, each through the
`cifar` preset and the policy on the worker path (the in-memory path draws the same way), shown
after normalisation is undone, so an erased box shows the dataset's mean colour.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from cnn_train.data.decode import read_rgb
from cnn_train.data.loaders import stream_samples
from cnn_train.data.memory import LabelledImages
from cnn_train.data.order import sample_seed
from cnn_train.data.policies import Augmentation, PolicySettings, erase
from cnn_train.data.preprocessing import EvalPreprocessing
from cnn_train.data.stream import collate
from cnn_train.data.vision import SPECS
from cnn_train.schema import AUTO_AUGMENT_POLICIES

CIFAR_MEAN, CIFAR_STD = SPECS["cifar10"].mean, SPECS["cifar10"].std
ROWS = {
    "none (cifar preset)": PolicySettings(),
    **{name: PolicySettings(name) for name in AUTO_AUGMENT_POLICIES if name != "none"},
    "random_erase=0.5": PolicySettings(random_erase=0.5),
}
LABEL_WIDTH = 150


def first_images(root: Path, count: int) -> LabelledImages:
    """The first images of each class folder in turn, `count` in all."""
    classes = sorted(path for path in root.iterdir() if path.is_dir())
    files = [sorted(folder.glob("*.jpg")) for folder in classes]
    picked = [files[i % len(classes)][i // len(classes)] for i in range(count)]
    images = torch.stack([read_rgb(str(path)) for path in picked])
    return LabelledImages(images, torch.zeros(count, dtype=torch.int64))


def policy_row(data: LabelledImages, settings: PolicySettings) -> torch.Tensor:
    """The images as training sees them with `settings`, in [0, 1]."""
    evaluation = EvalPreprocessing(32, CIFAR_MEAN, CIFAR_STD)
    augmentation = Augmentation(policies=settings)
    samples = stream_samples(data, "cifar", 32, augmentation, evaluation, train=True)
    keys = [(sample_seed(0, 0, 0, index), index) for index in range(len(data))]
    images, _, boxes, _ = collate([samples[key] for key in keys])
    normalized = erase(evaluation.normalizer(torch.device("cpu"))(images), boxes)
    mean, std = torch.tensor(CIFAR_MEAN)[:, None, None], torch.tensor(CIFAR_STD)[:, None, None]
    return (normalized * std + mean).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="CIFAR-10 JPEG class folders")
    parser.add_argument("output", type=Path, nargs="?", default=Path("docs/augment_grids.png"))
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--scale", type=int, default=2, help="pixels per image pixel")
    args = parser.parse_args()
    data = first_images(args.root, args.images)
    rows = [policy_row(data, settings) for settings in ROWS.values()]
    grid = make_grid(torch.cat(rows), nrow=args.images, padding=2, pad_value=1.0)
    pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(pixels)
    picture = picture.resize((picture.width * args.scale, picture.height * args.scale), 0)
    canvas = Image.new("RGB", (picture.width + LABEL_WIDTH, picture.height), "white")
    canvas.paste(picture, (LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = picture.height / len(ROWS)
    for row, name in enumerate(ROWS):
        draw.text((6, row * row_height + row_height / 2 - 6), name, fill="black")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.output, optimize=True)
    print(f"{args.output}: {canvas.width}x{canvas.height}, {args.output.stat().st_size} bytes")


if __name__ == "__main__":
    main()
