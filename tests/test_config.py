import pytest
import yaml

from erlmr import ConfigError, load_config
from erlmr.cli import main


def test_yaml_and_overrides_are_validated_into_dataclasses(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"method": {"name": "erlmr"}, "optim": {"lr": 1}}))
    config = load_config(path, ["train.epochs=3", "method.options.pareto_mode=features"])
    assert config.method.name == "erlmr" and config.train.epochs == 3
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.method.options == {"pareto_mode": "features"}


def test_unknown_key_lists_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['lr'\] in train; valid keys: epochs, batch_size"):
        load_config(None, ["train.lr=0.1"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['trian'\] in config; valid keys: data, model"):
        load_config(None, ["trian.epochs=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=-0.1", "optim.lr must be > 0"),
        ("model.euler_dropout=1.0", r"model.euler_dropout must be in \[0, 1\)"),
        ("train.epochs=zero", "train.epochs must be int"),
        ("optim.name=rmsprop", "unknown optimizer 'rmsprop'; valid: sgd, adam, adamw"),
        ("train.batch_size=0", "train.batch_size must be >= 1"),
    ],
)
def test_out_of_range_values_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_names_list_the_registered_ones(run_config, capsys):
    from erlmr import train

    with pytest.raises(ConfigError, match="unknown method 'erlm'; valid methods: .*erlmr.*joint"):
        train(run_config(method={"name": "erlm"}))
    with pytest.raises(ConfigError, match="unknown dataset 'basicmotion'; valid datasets: .*basicmotions"):
        train(run_config(data={"dataset": "basicmotion"}))
    with pytest.raises(ConfigError, match="unknown fusion 'mean'; valid fusions: concat, film, gated, sum"):
        train(run_config(model={"fusion": "mean"}))
    with pytest.raises(ConfigError, match="unknown encoder 'resnet9'"):
        train(run_config(model={"encoders": {"m0": "resnet9"}}))
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['strength'\] in options of dataset 'synthetic'; valid keys: strengths"
    ):
        train(run_config(data={"options": {"strength": [1, 2]}}))
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) \['mode'\] in method.options of 'erlmr'; valid keys: .*pareto_mode"
    ):
        train(run_config(method={"name": "erlmr", "options": {"mode": "x"}}))


@pytest.mark.parametrize(
    "section, message",
    [
        (
            {"model": {"fusion": "concat", "fusion_options": {"gate_on": 1}}},
            r"\['gate_on'\] in options of fusion 'concat'; it takes none",
        ),
        (
            {"model": {"fusion": "gated", "fusion_options": {"gate": 1}}},
            r"\['gate'\] in options of fusion 'gated'; valid keys: gate_on, hidden",
        ),
        (
            {"model": {"fusion": "gated", "fusion_options": {"hidden": "wide"}}},
            r"options of fusion 'gated'.hidden must be int, got 'wide'",
        ),
        (
            {"model": {"encoder_options": {"m0": {"depth": 3}}}},
            r"\['depth'\] in options of encoder 'mlp'; valid keys: hidden, layers, dropout",
        ),
        (
            {"method": {"name": "joint", "options": {"alpha": 1}}},
            r"\['alpha'\] in method.options of 'joint'; it takes none",
        ),
        (
            {"method": {"name": "ogm", "options": {"alpha": -1}}},
            r"method.options of 'ogm': option alpha must be >= 0, got -1",
        ),
    ],
)
def test_every_plugin_kind_validates_its_options_the_same_way(run_config, section, message):
    from erlmr import train

    with pytest.raises(ConfigError, match=message):
        train(run_config(data={"dataset": "synthetic", "options": {"train_size": 32, "test_size": 8}}, **section))


def test_cli_prints_one_clear_line_not_a_traceback(capsys):
    assert main(["train", "--method", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("erlmr: error: unknown method 'nope'") and "Traceback" not in err


def test_list_shows_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for heading, name in [
        ("methods:", "erlmr"),
        ("datasets:", "basicmotions"),
        ("encoders:", "cnn1d"),
        ("fusion:", "film"),
    ]:
        assert heading in out and name in out
