"""Running sums of loss and top-k hits, kept on the device so the loop never waits for them."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from cnn_train.distributed import is_distributed


class MetricSums:
    """Sums of loss, top-1 hits, top-k hits and samples over a phase, read back on demand."""

    def __init__(self, device: torch.device, topk: int, num_classes: int | None = None) -> None:
        self.topk = topk
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)
        self.num_classes = num_classes
        self.confusion = (
            torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
            if num_classes
            else None
        )

    def update(self, logits: torch.Tensor, targets: torch.Tensor, mean_loss: torch.Tensor) -> None:
        """Add one batch (its mean loss, logits and targets) without a host sync."""
        with torch.no_grad():
            top = logits.topk(self.topk, dim=1).indices
            hits = top.eq(targets.unsqueeze(1))
            count = targets.new_tensor(targets.shape[0], dtype=torch.float64)
            batch = torch.stack(
                [
                    mean_loss.detach().double() * count,
                    hits[:, 0].sum().double(),
                    hits.any(dim=1).sum().double(),
                    count,
                ]
            )
            self.sums.add_(batch)
            if self.confusion is not None:
                cells = targets * self.num_classes + top[:, 0]
                self.confusion.add_(torch.bincount(cells, minlength=self.confusion.numel()))

    def confusion_matrix(self) -> torch.Tensor | None:
        """Counts [true class, predicted class] over all ranks, if tracked (every rank calls it)."""
        if self.confusion is None or self.num_classes is None:
            return None
        counts = self.confusion.clone()
        if is_distributed():
            dist.all_reduce(counts)
        return counts.view(self.num_classes, self.num_classes).cpu()

    def read(self) -> dict[str, float]:
        """Loss, acc1 and acc5 as means over the samples seen, and the sample count.

        In a data-parallel job the sums of all ranks are added first, so every rank must call it.
        """
        sums = self.sums.clone()
        if is_distributed():
            dist.all_reduce(sums)
        loss, hits1, hitsk, count = sums.tolist()
        total = max(count, 1.0)
        return {
            "loss": loss / total,
            "acc1": hits1 / total,
            "acc5": hitsk / total,
            "samples": int(count),
        }


def class_report(confusion: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support from counts [true class, predicted class];
    `macro_f1` (the mean F1 of the classes that occur, as true or predicted labels) and
    `balanced_acc1` (the mean recall of the classes that occur as true labels)."""
    counts = confusion.double()
    hits, support, predicted = counts.diag(), counts.sum(dim=1), counts.sum(dim=0)
    precision = hits / predicted.clamp(min=1)
    recall = hits / support.clamp(min=1)
    f1 = torch.where(
        precision + recall > 0,
        2 * precision * recall / (precision + recall),
        torch.zeros_like(hits),
    )
    occurring = (support > 0) | (predicted > 0)
    per_class = {
        name: {
            "precision": float(precision[index]),
            "recall": float(recall[index]),
            "f1": float(f1[index]),
            "support": int(support[index]),
        }
        for index, name in enumerate(class_names)
    }
    return {
        "per_class": per_class,
        "macro_f1": float(f1[occurring].mean()) if occurring.any() else 0.0,
        "balanced_acc1": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
    }
