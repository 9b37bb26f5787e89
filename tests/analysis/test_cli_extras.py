from erlmr.analysis.bench import parse_methods
from erlmr.cli import main
from erlmr.methods import METHODS


def test_all_expands_to_every_method_that_runs_on_its_defaults():
    expanded = parse_methods("all,unimodal[modality=audio]")
    assert expanded[0] == "joint"
    assert set(expanded[:-1]) == {name for name in METHODS if name != "unimodal"}
    assert expanded[-1] == "unimodal[modality=audio]"
    assert parse_methods("erlmr,joint,erlmr") == ["erlmr", "joint"]


def test_avdigits_if_missing_keeps_an_existing_build(tmp_path, capsys):
    (tmp_path / "meta.json").write_text("{}")
    assert main(["data", "avdigits", "--out", str(tmp_path), "--if-missing"]) == 0
    assert "already built" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]
