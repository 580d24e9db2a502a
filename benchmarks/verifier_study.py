"""Issue 23's measurement: does a verifier that sees the record's items beat the count-only verdict score?

Records are made from ../shared/abid's metadata (``BIN_FCSKU_DATA``), for every bin with a list of items:

- the true record (label: match);
- one unit added, of an item already in the bin (mismatch);
- one unit added, of an item of another bin (mismatch);
- one unit removed (mismatch), for bins holding at least one item.

A record's features are the counter's outputs for the photo (its 13 calibrated probabilities, through the
same neighbour-ratio score checks use, log P(recorded), expected count minus recorded), the record's own
(recorded count, distinct items, total, mean and largest item volume, total weight, whether any item lacks
dimensions) and, for the third candidate, 32 principal components of the counter's penultimate features.
Each candidate is a small MLP (torch) fitted on the train split's records only; val records measure.

Candidates: the count-only neighbour ratio (the service's score, nothing fitted); an MLP on the record
alone, without the photo (a control: anything it separates comes from how the wrong records are made,
not from the photo); an MLP on the count features; the same with the record's features; the same with
the image features too.

Run: .venv/bin/python benchmarks/verifier_study.py CHECKPOINT [../shared/abid] [--cache runs/verifier]
(the counter's outputs for all 11,471 photos are cached in the cache folder: about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.abid import load_records, open_source
from model.checkpoint import load_model
from model.data import BinImages
from model.logits import normalise, to_input
from model.verdict_quality import auroc, mismatch_point
from model.verdicts import record_score

IN3_PER_LITRE = 61.0237


def counter_outputs(checkpoint: Path, data: str, cache: Path) -> dict[str, np.ndarray]:
    """Calibrated probabilities and penultimate features of every bin, computed once and cached."""
    target = cache / "outputs.npz"
    if target.is_file():
        return dict(np.load(target))
    loaded = load_model(checkpoint)
    source = open_source(data)
    records = load_records(source)
    ds = BinImages(source, records, loaded.classes, loaded.preprocessing)
    features: list[torch.Tensor] = []
    head = loaded.net._fc if hasattr(loaded.net, "_fc") else loaded.net.fc  # type: ignore[union-attr]
    hook = head.register_forward_hook(lambda _m, inputs, _o: features.append(inputs[0].detach()))
    logits = []
    loader = torch.utils.data.DataLoader(ds, batch_size=64, num_workers=2)
    with torch.inference_mode():
        for i, (images, _t, _c) in enumerate(loader):
            x = to_input(images, loaded.preprocessing, torch.device("cpu"), True)
            x = normalise(x, loaded.preprocessing, True)
            logits.append(loaded.net(x).float())
            if i % 20 == 0:
                print(f"  {min(len(ds), (i + 1) * 64)}/{len(ds)} photos", flush=True)
    hook.remove()
    temperature = float(loaded.metadata.get("temperature") or 1.0)
    probs = torch.cat(logits).div(temperature).softmax(dim=1).numpy()
    out = {
        "ids": np.array([r.id for r in ds.records]),
        "counts": np.array([r.count for r in ds.records]),
        "splits": np.array([r.split or "" for r in ds.records]),
        "probs": probs,
        "features": torch.cat(features).numpy(),
    }
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(target, **out)
    return out


def items(data: str, bin_id: str) -> list[dict]:
    meta = json.loads((Path(data) / "metadata" / f"{bin_id}.json").read_text())
    out = []
    for item in (meta.get("BIN_FCSKU_DATA") or {}).values():
        dims = [(item.get(k) or {}).get("value") for k in ("length", "width", "height")]
        volume = math.prod(dims) if all(isinstance(d, (int, float)) and d > 0 for d in dims) else None
        weight = (item.get("weight") or {}).get("value")
        out.append({"qty": int(item.get("quantity") or 0), "volume": volume, "weight": weight})
    return out


def record_features(record: list[dict]) -> list[float]:
    count = sum(i["qty"] for i in record)
    vols = [i["volume"] / IN3_PER_LITRE for i in record if i["volume"] is not None]
    weights = [float(i["weight"]) for i in record if isinstance(i["weight"], (int, float))]
    total_volume = sum(i["qty"] * i["volume"] / IN3_PER_LITRE for i in record if i["volume"] is not None)
    total_weight = sum(i["qty"] * float(i["weight"]) for i in record if isinstance(i["weight"], (int, float)))
    return [
        float(count),
        float(len([i for i in record if i["qty"] > 0])),
        math.log1p(total_volume),
        math.log1p(np.mean(vols)) if vols else 0.0,
        math.log1p(max(vols)) if vols else 0.0,
        math.log1p(total_weight),
        math.log1p(np.mean(weights)) if weights else 0.0,
        1.0 if len(vols) < len(record) else 0.0,
    ]


def count_features(p: np.ndarray, r: int) -> list[float]:
    k = len(p)
    index = min(r, k - 1)
    expected = float((p * np.arange(k)).sum())
    ratio = record_score(index, [float(x) for x in p], "neighbour_ratio")
    return [
        math.log(ratio + 1e-9),
        math.log(p[index] + 1e-9),
        expected - min(r, k - 1),
        float(p.argmax()) - index,
    ]


def make_records(data: str, ids: np.ndarray, rng: np.random.Generator) -> list[tuple[int, list[dict], int]]:
    """(row, record, label) for every bin with items: the true record and three wrong ones."""
    out = []
    all_items = {i: items(data, str(b)) for i, b in enumerate(ids)}
    donors = [i for i, record in all_items.items() if record]
    for row, record in all_items.items():
        if not record:
            continue
        out.append((row, record, 1))
        j = int(rng.integers(len(record)))
        out.append((row, [dict(it, qty=it["qty"] + (n == j)) for n, it in enumerate(record)], 0))
        donor = all_items[donors[int(rng.integers(len(donors)))]]
        out.append((row, [*record, dict(donor[int(rng.integers(len(donor)))], qty=1)], 0))
        held = [n for n, it in enumerate(record) if it["qty"] > 0]
        if held:
            k = held[int(rng.integers(len(held)))]
            out.append((row, [dict(it, qty=it["qty"] - (n == k)) for n, it in enumerate(record)], 0))
    return out


def fit_mlp(x: np.ndarray, y: np.ndarray, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _epoch in range(60):
        perm = torch.randperm(len(xt))
        for start in range(0, len(xt), 256):
            batch = perm[start : start + 256]
            loss = nn.functional.binary_cross_entropy_with_logits(net(xt[batch]).squeeze(1), yt[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def figures(score: np.ndarray, label: np.ndarray) -> str:
    pos, neg = score[label == 1], score[label == 0]
    caught = (neg < mismatch_point(pos, 0.05)).mean()
    return f"{auroc(pos, neg):.3f} | {caught:.1%} | {(neg < mismatch_point(pos, 0.02)).mean():.1%}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", nargs="?", default="../shared/abid")
    parser.add_argument("--cache", type=Path, default=Path("runs/verifier"))
    args = parser.parse_args()
    out = counter_outputs(args.checkpoint, args.data, args.cache)
    rng = np.random.default_rng(0)
    rows = make_records(args.data, out["ids"], rng)
    feats = out["features"]
    train_rows = out["splits"] == "train"
    mean = feats[train_rows].mean(0)
    _u, _s, vt = np.linalg.svd(feats[train_rows] - mean, full_matrices=False)
    pcs = (feats - mean) @ vt[:32].T

    def table(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        xs, ys, split, counts, baseline = [], [], [], [], []
        for row, record, label in rows:
            r = sum(i["qty"] for i in record)
            c = count_features(out["probs"][row], r)
            if kind == "record only":
                x = [float(r)] + record_features(record)
            else:
                x = c if kind == "count" else c + record_features(record)
            if kind == "image":
                x = x + pcs[row].tolist()
            xs.append(x)
            ys.append(label)
            split.append(out["splits"][row])
            counts.append(out["counts"][row])
            baseline.append(c[0])
        return np.array(xs), np.array(ys), np.array(split), np.array(counts), np.array(baseline)

    print(f"{len(rows)} records from {len({r for r, _, _ in rows})} bins with item lists\n")
    print("| verdict score (val records, bins with 0-5 items) | AUROC | caught at 5% false alarms | at 2% |")
    print("|---|---|---|---|")
    kept: dict[str, np.ndarray] = {}
    for kind in ("record only", "count", "record", "image"):
        x, y, split, counts, baseline = table(kind)
        keep = (split == "val") & (counts <= 5)
        if kind == "count":
            print(f"| neighbour ratio (the service's score) | {figures(baseline[keep], y[keep])} |")
        train = split == "train"
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        net = fit_mlp((x[train] - mu) / sd, y[train])
        with torch.inference_mode():
            score = net(torch.tensor((x - mu) / sd, dtype=torch.float32)).squeeze(1).numpy()
        name = {
            "record only": "MLP on the record alone (no photo: a control)",
            "count": "MLP on the count features",
            "record": "+ the record's items",
            "image": "+ 32 image PCs",
        }
        print(f"| {name[kind]} | {figures(score[keep], y[keep])} |")
        kept[kind] = score
        kept["ratio"], kept["y"], kept["keep"] = baseline, y, keep
        kept["r"] = x[:, 4] if kind == "record" else kept.get("r", np.zeros(len(y)))
        if kind == "record":
            kept["volume"], kept["no_dims"] = x[:, 6], x[:, -1]
    breakdown(kept)


def breakdown(kept: dict[str, np.ndarray]) -> None:
    """The verifier (count features + the record's items) against the ratio, by group of val records."""
    y, keep = kept["y"], kept["keep"]
    volume = kept["volume"]
    cuts = np.quantile(volume[keep], [1 / 3, 2 / 3])
    groups = {f"recorded {int(r)}": keep & (kept["r"] == r) for r in range(7)}
    groups |= {
        "small items (total volume, lowest third)": keep & (volume <= cuts[0]),
        "middle third": keep & (volume > cuts[0]) & (volume <= cuts[1]),
        "large items (highest third)": keep & (volume > cuts[1]),
        "an item lacks dimensions": keep & (kept["no_dims"] > 0),
    }
    print(
        "\n| group | records | neighbour ratio: AUROC / caught / at 2% | verifier: AUROC / caught / at 2% |"
    )
    print("|---|---|---|---|")
    for name, mask in groups.items():
        if (y[mask] == 1).sum() < 5 or (y[mask] == 0).sum() < 5:
            continue
        print(
            f"| {name} | {mask.sum()} | {figures(kept['ratio'][mask], y[mask])} | "
            f"{figures(kept['record'][mask], y[mask])} |"
        )


if __name__ == "__main__":
    main()
