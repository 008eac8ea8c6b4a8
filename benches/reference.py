#!/usr/bin/env python3
"""Reference comparison: PMI's ensemble against scikit-learn's IsolationForest and XGBoost
trained on the same exported table with the same split.

    cargo build --release
    ./target/release/pmi train --export /tmp/trainset.parquet      # the simulated training set
    python3 -m pip install -r benches/requirements.txt
    python3 benches/reference.py /tmp/trainset.parquet --seeds 1 2 3

For each seed, the vehicles are split into train / validation / test (20 % test, 15 %
validation, vehicles with and without failures split separately, as PMI does), the split
is written into a copy of the table, and then:
- PMI: `pmi train --table COPY --label label --group vehicle_id --time pane_end
  --split-column split --ignore in_service --seed S` (its metrics.json is read back);
- XGBoost (hist, 300 rounds at most, depth 5, learning rate 0.1, L2 1, column sample 0.8,
  256 bins, early stopping after 25 rounds on the validation log-loss: PMI's defaults);
- scikit-learn IsolationForest (100 trees, 256 samples, median-imputed, fitted on the
  healthy training rows, as PMI's).
Each is scored on the same test rows ("fails within the horizon": any label), as ROC-AUC and
PR-AUC (average precision), with fit and predict times. The mean over seeds is printed last.
`--in-service` keeps only the rows of vehicles in service (PMI's headline population).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sklearn
import xgboost
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.metrics import average_precision_score, roc_auc_score

META = {"vehicle_id", "pane_end", "label", "split", "in_service"}


def split_vehicles(vehicles, positive_vehicles, seed, test=0.2, valid=0.15):
    rng = np.random.default_rng(seed)
    part = {}
    for group in (sorted(positive_vehicles), sorted(set(vehicles) - set(positive_vehicles))):
        group = list(group)
        rng.shuffle(group)
        n = len(group)
        n_test = max(round(n * test), 1 if n >= 3 else 0)
        n_valid = max(round(n * valid), 1 if n >= 3 else 0)
        for i, v in enumerate(group):
            part[v] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    return part


def run_pmi(pmi, table_path, seed, registry):
    started = time.perf_counter()
    out = subprocess.run(
        [pmi, "train", "--table", table_path, "--label", "label", "--group", "vehicle_id",
         "--time", "pane_end", "--split-column", "split", "--ignore", "in_service",
         "--seed", str(seed),
         "--registry", registry],
        capture_output=True, text=True, env={**os.environ, "PMI_LOG": "warn"})
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"pmi train failed:\n{out.stdout}\n{out.stderr}")
    current = open(os.path.join(registry, "CURRENT")).read().strip()
    metrics = json.load(open(os.path.join(registry, current, "metrics.json")))
    return metrics, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--pmi", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "pmi"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--in-service", action="store_true",
                    help="keep only the rows of vehicles in service (the engine ran in the longest window)")
    args = ap.parse_args()

    table = pq.read_table(args.table)
    if args.in_service:
        table = table.filter(table.column("in_service"))
    features = [c for c in table.column_names if c not in META]
    X = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in features])
    y = pc.invert(pc.is_null(table.column("label"))).to_numpy(zero_copy_only=False).astype(bool)
    vehicles = np.array(table.column("vehicle_id").to_pylist())
    positive_vehicles = set(vehicles[y])
    print(f"{args.table}: {len(y)} rows, {y.sum()} positive, {len(features)} features, "
          f"{len(set(vehicles))} vehicles; xgboost {xgboost.__version__}, scikit-learn {sklearn.__version__}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            part = split_vehicles(set(vehicles), positive_vehicles, seed)
            split = np.array([part[v] for v in vehicles])
            copy = os.path.join(tmp, f"seed{seed}.parquet")
            t = table.set_column(table.column_names.index("split"), "split", pa.array(split))
            pq.write_table(t, copy)
            train, valid, test = (split == "train"), (split == "valid"), (split == "test")

            pmi_metrics, pmi_seconds = run_pmi(args.pmi, copy, seed, os.path.join(tmp, f"reg{seed}"))

            started = time.perf_counter()
            model = xgboost.XGBClassifier(
                n_estimators=300, learning_rate=0.1, max_depth=5, reg_lambda=1.0,
                min_child_weight=1.0, colsample_bytree=0.8, max_bin=256, tree_method="hist",
                early_stopping_rounds=25, eval_metric="logloss", random_state=seed,
                n_jobs=args.threads)
            model.fit(X[train], y[train], eval_set=[(X[valid], y[valid])], verbose=False)
            fit_s = time.perf_counter() - started
            started = time.perf_counter()
            p = model.predict_proba(X[test])[:, 1]
            predict_s = time.perf_counter() - started

            started = time.perf_counter()
            imputer = SimpleImputer(strategy="median", keep_empty_features=True).fit(X[train & ~y])
            forest = IsolationForest(n_estimators=100, max_samples=256, random_state=seed,
                                     n_jobs=args.threads).fit(imputer.transform(X[train & ~y]))
            anomaly = -forest.score_samples(imputer.transform(X[test]))
            iso_s = time.perf_counter() - started

            row = {
                "seed": seed,
                "test_rows": int(test.sum()),
                "test_positive": int(y[test].sum()),
                "pmi_ensemble_roc": pmi_metrics["overall"]["roc_auc"],
                "pmi_ensemble_pr": pmi_metrics["overall"]["pr_auc"],
                "pmi_trees_roc": pmi_metrics["trees"]["roc_auc"],
                "pmi_forest_roc": pmi_metrics["anomaly"]["roc_auc"],
                "pmi_seconds": pmi_seconds,
                "xgb_roc": roc_auc_score(y[test], p),
                "xgb_pr": average_precision_score(y[test], p),
                "xgb_rounds": model.best_iteration + 1,
                "xgb_fit_s": fit_s,
                "xgb_predict_s": predict_s,
                "iforest_roc": roc_auc_score(y[test], anomaly),
                "iforest_s": iso_s,
            }
            rows.append(row)
            print(f"seed {seed}: test {row['test_rows']} rows ({row['test_positive']} positive) | "
                  f"PMI ensemble ROC-AUC {row['pmi_ensemble_roc']:.4f} PR-AUC {row['pmi_ensemble_pr']:.4f}, "
                  f"trees {row['pmi_trees_roc']:.4f}, forest {row['pmi_forest_roc']:.4f} "
                  f"({pmi_seconds:.1f} s incl. reading the table) | "
                  f"XGBoost ROC-AUC {row['xgb_roc']:.4f} PR-AUC {row['xgb_pr']:.4f} "
                  f"({row['xgb_rounds']} rounds, fit {fit_s:.1f} s, predict {predict_s * 1000:.0f} ms) | "
                  f"sklearn IsolationForest ROC-AUC {row['iforest_roc']:.4f} ({iso_s:.1f} s)")

    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "seed"}
    print(f"mean over {len(rows)} seeds: PMI ensemble ROC-AUC {mean['pmi_ensemble_roc']:.4f} "
          f"(PR-AUC {mean['pmi_ensemble_pr']:.4f}), PMI trees {mean['pmi_trees_roc']:.4f}, "
          f"XGBoost {mean['xgb_roc']:.4f} (PR-AUC {mean['xgb_pr']:.4f}); "
          f"difference PMI − XGBoost {mean['pmi_ensemble_roc'] - mean['xgb_roc']:+.4f}; "
          f"PMI forest {mean['pmi_forest_roc']:.4f} vs sklearn IsolationForest {mean['iforest_roc']:.4f}")
    print(json.dumps({"seeds": rows, "mean": mean}, indent=1))


if __name__ == "__main__":
    main()
