"""Analysis of trained runs: evaluation, imbalance metrics, cost, bench tables, reports, prediction."""
