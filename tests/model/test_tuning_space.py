"""Search spaces (model/tuning/space.py): declared as text or JSON, validated against the training settings,
shown back, and sampled within their bounds."""

from __future__ import annotations

import pytest

from model.tuning.space import Categorical, FloatRange, IntRange, SearchSpace, SpaceError


def test_text_and_json_forms_declare_the_same_space() -> None:
    text = SearchSpace.parse(
        [
            "lr=1e-4..1e-2:log",
            "epochs=2..6:step=2",
            "image_size=96,112,128",
            "optimizer=adamw,sgd",
            "hflip=true,false",
        ]
    )
    assert text.params == (
        FloatRange("lr", 1e-4, 1e-2, log=True),
        IntRange("epochs", 2, 6, step=2),
        Categorical("image_size", (96, 112, 128)),
        Categorical("optimizer", ("adamw", "sgd")),
        Categorical("hflip", (True, False)),
    )
    assert SearchSpace.from_dict(text.to_dict()) == text
    assert text.rows()[0] == ("lr", "float", "0.0001 .. 0.01 (log)")
    assert text.rows()[1] == ("epochs", "int", "2 .. 6 step 2")
    # A float setting given integer-looking bounds is still a float range.
    assert SearchSpace.parse(["weight_decay=0..1"]).params == (FloatRange("weight_decay", 0.0, 1.0),)


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        ("learning_rate=1e-4..1e-2", "learning_rate", "is not a training setting"),
        ("lr=1e-2..1e-4", "lr", "low 0.01 is greater than high 0.0001"),
        ("lr=0.01..0.01", "lr", "is empty"),
        ("lr=0..0.1:log", "lr", "log range needs low > 0"),
        ("lr=-1..0.1", "lr", "not a valid value"),  # the setting itself requires lr > 0
        ("optimizer=adamw", "optimizer", "two values at least"),
        ("optimizer=adamw,adam", "optimizer", "'adam' is not a valid value"),
        ("image_size=16,96", "image_size", "16 is not a valid value"),
        ("epochs=1.5..4", "epochs", "must be integers"),
        ("hflip=0..1", "hflip", "takes true/false, not a float range"),
        ("device=cpu,cuda", "device", "cannot be searched"),
        ("seed=0,1", "seed", "cannot be searched"),
        ("lr=1e-4..1e-2:linear", "lr", "unknown range option"),
        ("lr=abc..1", "lr", "is not a number"),
        ("lr", "lr", "expected NAME=LOW..HIGH"),
        ("image_size=96,,112", "image_size", "empty choice"),
        ("image_size=96,96", "image_size", "same value twice"),
    ],
)
def test_bad_spaces_name_the_field_and_say_what_is_wrong(spec: str, field: str, fragment: str) -> None:
    with pytest.raises(SpaceError) as caught:
        SearchSpace.parse([spec])
    assert caught.value.field == field
    assert fragment in str(caught.value), str(caught.value)


def test_bad_json_spaces_are_refused_too() -> None:
    cases = [
        ({}, "space", "is empty"),
        ({"lr": {"type": "float", "low": 1e-3}}, "lr", "needs low and high"),
        (
            {"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": "yes"}},
            "lr",
            "log must be true or false",
        ),
        ({"lr": {"type": "normal", "low": 1, "high": 2}}, "lr", "type must be float, int or categorical"),
        ({"lr": {"type": "float", "low": 1e-3, "high": 1e-2, "scale": 2}}, "lr", "unknown keys scale"),
        (
            {"epochs": {"type": "int", "low": 1, "high": 4, "log": True, "step": 2}},
            "epochs",
            "cannot have a step",
        ),
        ({"lr": {"type": "int", "low": 1, "high": 4}}, "lr", "not an integer range"),
        ({"optimizer": {"type": "categorical", "choices": "adamw"}}, "optimizer", "list of choices"),
        ({"lr": [1, 2]}, "lr", "must be an object"),
    ]
    for data, field, fragment in cases:
        with pytest.raises(SpaceError) as caught:
            SearchSpace.from_dict(data)
        assert caught.value.field == field and fragment in str(caught.value), (data, str(caught.value))
    with pytest.raises(SpaceError, match="appears twice"):
        SearchSpace.parse(["lr=1e-3..1e-2", "lr=1e-4..1e-3"])


def test_sampled_points_stay_inside_the_space() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.parse(["lr=1e-4..1e-2:log", "epochs=2..6:step=2", "image_size=96,112"])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = []
    for _ in range(30):
        trial = study.ask()
        point = space.suggest(trial)
        study.tell(trial, 0.0)
        seen.append(point)
        assert 1e-4 <= point["lr"] <= 1e-2
        assert point["epochs"] in (2, 4, 6)
        assert point["image_size"] in (96, 112)
    assert len({p["image_size"] for p in seen}) == 2 and len({p["epochs"] for p in seen}) == 3
