"""Fuzz config files and ``--set`` values: every input is either built into a trainer or refused with an
ErlmrError (one line at the command line); never another exception."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from erlmr.config import Config, load_config
from erlmr.errors import ErlmrError
from erlmr.methods import METHODS
from erlmr.training.runstate import flatten
from erlmr.training.trainer import Trainer

DEFAULTS = flatten(Config().to_dict())
#: every key of the config, a few of method options, encoders and heads, and some that do not exist
KEYS = sorted(DEFAULTS) + [
    "method.options.alpha",
    "method.options.modality",
    "method.options.pareto_mode",
    "method.options.erlmr",
    "model.encoders.m0",
    "model.encoders.m9",
    "model.encoder_options.m0.dropout",
    "model.encoder_options.m0.hidden",
    "model.encoder_options.m0.layers",
    "model.encoder_options.m1",
    "model.fusion_options.hidden",
    "model.fusion_options.gate_on",
    "model",
    "train",
    "x",
    "train.x",
    "optim.lr.x",
    "",
    "a..b",
]
NAMES = sorted(METHODS) + [
    "erlmr+ogm_ge",
    "joint+erlmr",
    "mlp",
    "concat",
    "gated",
    "film",
    "sum",
    "sgd",
    "adamw",
    "step",
    "cosine",
    "cpu",
    "auto",
    "cuda:7",
    "m0",
    "m1",
    "params",
    "features",
    "",
    "?",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 40),
    st.floats(-2, 2),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e-300]),
    st.sampled_from(NAMES),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=3),
    max_leaves=6,
)
#: raw text as a YAML value, malformed or not
YAML_TEXT = st.text(alphabet="{}[],:'\"-.!&*#|>%@` 0123456789abexnul\n\t", max_size=12)
#: the data stay a small synthetic set, so that every input that passes the checks is built quickly
SMALL = {"train_size": 64, "test_size": 32, "dim": 8}


def plausible(key: str) -> st.SearchStrategy:
    """Values of the type the key's default has (near the valid range), so that many inputs get past the
    type checks and on to the range checks and the building of the model and method."""
    default = DEFAULTS.get(key)
    if isinstance(default, bool):
        return st.booleans()
    if key == "train.seed":
        return st.integers(-(2**70), 2**70)
    if isinstance(default, int):  # small: a legitimately huge size (model.euler_dim=2**32) asks for terabytes
        return st.integers(1, 32) | st.integers(-2, 40)
    if isinstance(default, float):
        return st.floats(0.001, 0.9) | st.floats(-0.5, 1.5) | st.sampled_from([float("nan"), float("inf"), 0.0])
    if isinstance(default, dict):
        return st.dictionaries(st.sampled_from(NAMES), SCALARS, max_size=2)
    return st.sampled_from(NAMES) | SCALARS


@st.composite
def overrides(draw) -> list[str]:
    sets = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(KEYS))
        kind = draw(st.sampled_from(["plausible"] * 4 + ["any", "text"]))
        value = draw(YAML_TEXT) if kind == "text" else draw(plausible(key) if kind == "plausible" else VALUES)
        text = (
            value if kind == "text" else yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
        )
        sets.append(draw(st.sampled_from([f"{key}={text}"] * 8 + [key, f"{key}=={text}"])))
    return sets


@st.composite
def config_files(draw) -> str | None:
    kind = draw(st.sampled_from(["none", "none", "sections", "sections", "values", "text"]))
    if kind == "none":
        return None
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "values":
        return yaml.safe_dump(draw(VALUES))
    sections = {}
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=4)):
        node = sections
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[last] = draw(plausible(key) | VALUES)
    return yaml.safe_dump(sections)


def build(text: str | None, sets: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = None
        if text is not None:
            path = Path(folder) / "config.yaml"
            path.write_text(text)
        config = load_config(path, sets)
        config.data.dataset, config.data.root = "synthetic", None
        config.data.options.update(SMALL)  # its other options are checked by the dataset
        Trainer(config)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_files(), overrides())
def test_config_files_and_overrides_are_built_or_refused_with_a_message(text, sets):
    try:
        build(text, sets)
    except ErlmrError as error:
        event(f"refused: {type(error).__name__}")
        assert str(error) and "\n" not in str(error).strip()
    else:
        event("built")
