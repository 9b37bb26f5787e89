"""Bench tables: the paired interval of each method's difference to joint, and whether fusion pays."""

from erlmr.analysis.bench import data_lines, markdown_table, summary_tables


def rows(method, accuracies, **extra):
    return [
        {
            "dataset": "d",
            "method": method,
            "seed": s,
            "accuracy": a,
            "macro_f1": a,
            "acc_audio": a,
            "imbalance_degree": 0.1,
            "step_time_s": 0.01,
            **extra,
        }
        for s, a in enumerate(accuracies)
    ]


def test_difference_to_joint_is_paired_by_seed_and_fusion_that_does_not_pay_is_flagged():
    grid = [
        *rows("joint", [0.80, 0.82, 0.84]),
        *rows("erlmr", [0.85, 0.87, 0.89]),
        *rows("ogm", [0.70, 0.90, 0.80]),
        *rows("unimodal (modality=audio)", [0.86, 0.86, 0.86]),
    ]
    headings, lines = summary_tables(grid)["d"]
    assert headings[-2:] == ["Δ accuracy vs joint [95% CI]", "beats unimodal (modality=audio)"]
    cells = {line[0]: line for line in lines}
    assert cells["erlmr"][-2] == "+0.050 [+0.050, +0.050] *"  # the same gain on every seed: the interval excludes 0
    assert not cells["ogm"][-2].endswith("*")  # -0.02 on average, with a wide interval
    assert cells["erlmr"][-1] == "yes" and cells["joint"][-1] == "**no**" and cells["ogm"][-1] == "**no**"
    assert cells["joint"][-2] == "" and cells["unimodal (modality=audio)"][-1] == ""
    assert "**no**" in markdown_table(grid)


def test_the_header_names_each_datasets_fingerprint_and_flags_runs_on_other_data():
    same = [
        {"dataset": "d", "seed": 0, "data_fingerprint": "ab12"},
        {"dataset": "d", "seed": 0, "data_fingerprint": "ab12"},
        {"dataset": "d", "seed": 1, "data_fingerprint": "ef56"},  # another seed, another validation split
    ]
    assert data_lines(same) == ["- data d: fingerprint by seed 0 ab12, 1 ef56"]
    mixed = [*same, {"dataset": "d", "seed": 0, "data_fingerprint": "cd34"}, {"dataset": "e", "seed": 0}]
    lines = data_lines(mixed)
    flagged = " (**runs of one seed did not all see the same data**)"
    assert lines[0] == "- data d: fingerprint by seed 0 ab12/cd34, 1 ef56" + flagged
    assert lines[1] == "- data e: fingerprint by seed 0 not recorded"


def test_the_machine_line_names_the_cpu_kernels_runs_depend_on(monkeypatch):
    import torch

    from erlmr.analysis.cost import machine_description

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    line = machine_description(["AMD EPYC (1 threads)"])
    assert f"torch {torch.__version__} (CPU kernels AVX2); runs on AMD EPYC (1 threads)" in line
