"""The results file of `hba evaluate` ("hba-evaluation", version 1): per-seed test numbers,
their mean ± std, the resolved configuration and how the run was made.

Errors are percentages (100 − accuracy). The spread is the sample standard deviation
(ddof = 1, as papers report it over seeds); with one seed it is 0. pydantic only (no torch),
so the file can be read, validated and summarised without the training stack.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_NAME = "hba-evaluation"
FORMAT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeedResult(_Strict):
    """One trained model: its final test numbers and the last epoch's training numbers."""

    seed: int
    test_error: float = Field(description="top-1 test error, %")
    test_top5_error: float | None = Field(None,
                                          description="top-5 test error, % (ImageNet families)")
    test_loss: float = Field(description="mean cross-entropy on the test set")
    train_loss: float = Field(description="mean training loss of the last epoch")
    train_accuracy: float = Field(
        description="training accuracy of the last epoch, % (augmented images)")
    epochs: int
    train_seconds: float = Field(
        description="wall-clock time of this seed's training, over all resumed sessions")
    images_per_second: float = Field(
        description="training images per second (all ranks) in the last session")


class MeanStd(_Strict):
    mean: float
    std: float = Field(description="sample standard deviation over seeds (0 for one seed)")

    @classmethod
    def of(cls, values: list[float]) -> MeanStd:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(mean=statistics.fmean(values), std=std)

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}"


class Summary(_Strict):
    seeds: int
    test_error: MeanStd
    test_top5_error: MeanStd | None = None
    test_loss: MeanStd

    @classmethod
    def of(cls, results: list[SeedResult]) -> Summary:
        top5 = [r.test_top5_error for r in results if r.test_top5_error is not None]
        return cls(seeds=len(results),
                   test_error=MeanStd.of([r.test_error for r in results]),
                   test_top5_error=MeanStd.of(top5) if len(top5) == len(results) else None,
                   test_loss=MeanStd.of([r.test_loss for r in results]))


class EvaluationProvenance(_Strict):
    versions: dict[str, str]
    device: str
    world_size: int = Field(description="processes that trained data-parallel (torchrun)")
    command: str | None = None
    wall_seconds: float = Field(description="wall-clock time of the session that wrote the file")
    created: datetime
    schedule: dict[str, Any] | None = Field(
        None, description="provenance of the replayed schedule (its search), if a schedule")
    image_size: int | None = Field(None, description="side of the square images trained on")


class EvaluationResults(_Strict):
    """What `hba evaluate` writes to --out."""

    format: Literal[FORMAT_NAME] = FORMAT_NAME
    version: Literal[FORMAT_VERSION] = FORMAT_VERSION
    policy: str = Field(description="schedule file or baseline name")
    dataset: str
    model: str
    train_images: int = Field(description="images in the training set")
    test_images: int
    per_seed: list[SeedResult]
    summary: Summary
    config: dict[str, Any] = Field(description="the resolved EvaluateConfig")
    provenance: EvaluationProvenance
