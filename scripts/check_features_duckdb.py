#!/usr/bin/env python3
"""Recompute PMI's window features with DuckDB and compare with PMI's output.

DuckDB is an independent engine: this script implements DESIGN.md's feature semantics in
SQL from the raw telemetry (sliding windows (b - W, b] at every pane end b, count, mean,
population std, min, max, last, least-squares slope against time in seconds; derived
channels as documented in core/src/features.rs) and checks every value of every vector PMI
wrote, within a relative tolerance (default 1e-9). Statistics that can be zero (std, slope)
are compared relative to the size of the data they come from (|window mean|, and
|window mean| / W for slopes).

Usage: check_features_duckdb.py TELEMETRY_PARQUET_GLOB FEATURES_PARQUET_GLOB
         [--pane 10] [--windows 60,300,900] [--rel 1e-9]
Exit status 0 when everything matches; prints a summary line 'N passed, M failed'.
"""
import argparse
import math
import sys

import duckdb

SENSORS = [
    "engine_temp_c", "coolant_temp_c", "oil_pressure_kpa", "oil_temp_c", "rpm", "speed_kmh",
    "engine_load_pct", "battery_voltage_v", "fuel_pressure_kpa", "fuel_level_pct",
    "vibration_rms_g", "ambient_temp_c", "odometer_km", "throttle_pct",
]
# Derived channels, as SQL over one reading (NULL when undefined). Mirrors Derived::compute.
DERIVED = {
    "engine_coolant_delta_c": "engine_temp_c - coolant_temp_c",
    "oil_pressure_per_krpm": "CASE WHEN rpm >= 600 THEN oil_pressure_kpa / (rpm / 1000.0) END",
    "vibration_idle_g": "CASE WHEN speed_kmh < 5 AND rpm >= 400 THEN vibration_rms_g END",
    "vibration_highway_g": "CASE WHEN speed_kmh >= 80 THEN vibration_rms_g END",
    "battery_voltage_under_load_v":
        "CASE WHEN engine_load_pct >= 50 OR (rpm > 0 AND rpm < 400) THEN battery_voltage_v END",
    "fuel_pressure_high_load_kpa": "CASE WHEN engine_load_pct >= 70 THEN fuel_pressure_kpa END",
    "oil_coolant_delta_c": "oil_temp_c - coolant_temp_c",
}
STATS = ["count", "mean", "std", "min", "max", "last", "slope"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("telemetry")
    ap.add_argument("features")
    ap.add_argument("--pane", type=int, default=10)
    ap.add_argument("--windows", default="60,300,900")
    ap.add_argument("--rel", type=float, default=1e-9)
    args = ap.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    pane_ms, max_w_ms = args.pane * 1000, max(windows) * 1000

    con = duckdb.connect()
    feat_cols = [r[0] for r in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{args.features}')").fetchall()]
    channels = [c for c in SENSORS + list(DERIVED)
                if f"{c}_count_{windows[0]}s" in feat_cols]
    if not channels:
        print("no known feature columns in the features output", file=sys.stderr)
        return 2
    tel_types = {r[0]: r[1] for r in con.execute(
        f"DESCRIBE SELECT * FROM read_parquet('{args.telemetry}')").fetchall()}
    tel_cols = set(tel_types)
    # ts as a timestamp of any unit, or as int64 milliseconds since the epoch.
    ts_ms = "ts" if tel_types["ts"] in ("BIGINT", "INTEGER") else "epoch_ms(ts)"
    sensor_exprs = [f"CAST({s} AS DOUBLE) AS {s}" if s in tel_cols else f"CAST(NULL AS DOUBLE) AS {s}"
                    for s in SENSORS]
    con.execute(f"""
        CREATE TABLE r AS
        SELECT DISTINCT ON (vehicle_id, t) *
        FROM (SELECT vehicle_id, {ts_ms} AS t, {', '.join(sensor_exprs)}
              FROM read_parquet('{args.telemetry}'))
        ORDER BY vehicle_id, t""")
    derived_sql = ", ".join(f"{expr} AS {name}" for name, expr in DERIVED.items())
    con.execute(f"CREATE TABLE rd AS SELECT *, {derived_sql} FROM r")
    # Every pane end with at least one reading in (b - maxW, b].
    con.execute(f"""
        CREATE TABLE b AS
        SELECT DISTINCT vehicle_id, pe + k * {pane_ms} AS b
        FROM (SELECT vehicle_id, CAST(ceil(t / {pane_ms}.0) AS BIGINT) * {pane_ms} AS pe FROM rd),
             range(0, {max_w_ms // pane_ms}) AS g(k)""")
    aggs = []
    for w in windows:
        lo = f"rd.t > b.b - {w * 1000}"
        for c in channels:
            x = f"CASE WHEN {lo} THEN rd.{c} END"
            tsec = f"CASE WHEN {lo} AND rd.{c} IS NOT NULL THEN (rd.t - b.b) / 1000.0 END"
            aggs += [
                f"count({x}) AS \"{c}_count_{w}s\"",
                f"avg({x}) AS \"{c}_mean_{w}s\"",
                f"stddev_pop({x}) AS \"{c}_std_{w}s\"",
                f"min({x}) AS \"{c}_min_{w}s\"",
                f"max({x}) AS \"{c}_max_{w}s\"",
                f"arg_max({x}, CASE WHEN {x} IS NOT NULL THEN rd.t END) AS \"{c}_last_{w}s\"",
                # DESIGN.md: 0 with fewer than two distinct times (DuckDB gives NaN there).
                f"CASE WHEN count({x}) = 1 THEN 0 WHEN count({x}) > 1 "
                f"THEN regr_slope({x}, {tsec}) END AS \"{c}_slope_{w}s\"",
            ]
    con.execute(f"""
        CREATE TABLE want AS
        SELECT b.vehicle_id, b.b AS pane_end, {', '.join(aggs)}
        FROM b JOIN rd ON rd.vehicle_id = b.vehicle_id
             AND rd.t > b.b - {max_w_ms} AND rd.t <= b.b
        GROUP BY b.vehicle_id, b.b""")
    con.execute(f"""CREATE TABLE got AS SELECT * EXCLUDE (pane_end), epoch_ms(pane_end) AS pane_end
                    FROM read_parquet('{args.features}')""")

    only_want = con.execute("""SELECT count(*) FROM want ANTI JOIN got USING (vehicle_id, pane_end)""").fetchone()[0]
    only_got = con.execute("""SELECT count(*) FROM got ANTI JOIN want USING (vehicle_id, pane_end)""").fetchone()[0]
    dup_got = con.execute("""SELECT count(*) - count(DISTINCT (vehicle_id, pane_end)) FROM got""").fetchone()[0]

    names = [f"{c}_{s}_{w}s" for c in channels for w in windows for s in STATS]
    cols = ", ".join(f"w.\"{n}\", g.\"{n}\"" for n in names)
    rows = con.execute(f"""SELECT w.vehicle_id, w.pane_end, {cols}
                           FROM want w JOIN got g USING (vehicle_id, pane_end)""").fetchall()
    passed = failed = 0
    worst = {}
    for row in rows:
        vals = row[2:]
        for i, name in enumerate(names):
            a, b = vals[2 * i], vals[2 * i + 1]
            stat = name.split("_")[-2]
            if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
                ok = (a is None) == (b is None or (isinstance(b, float) and math.isnan(b)))
                err = 0.0 if ok else math.inf
            else:
                scale = 0.0
                if stat in ("std", "slope"):
                    mean_name = name.replace(f"_{stat}_", "_mean_")
                    m = vals[2 * names.index(mean_name)] or 0.0
                    w = int(name.rsplit("_", 1)[1][:-1])
                    scale = abs(m) if stat == "std" else abs(m) / w
                denom = max(abs(a), abs(b), scale)
                err = 0.0 if a == b else abs(a - b) / denom if denom > 0 else math.inf
                ok = err <= args.rel
            if ok:
                passed += 1
            else:
                failed += 1
                if failed <= 10:
                    print(f"MISMATCH {row[0]} {row[1]} {name}: duckdb={a!r} pmi={b!r}")
            key = stat
            worst[key] = max(worst.get(key, 0.0), err)
    print(f"vectors compared: {len(rows)}; only in DuckDB: {only_want}; only in PMI: {only_got}; "
          f"duplicate vectors in PMI: {dup_got}")
    print("largest relative error per statistic: " +
          ", ".join(f"{k} {v:.2e}" for k, v in sorted(worst.items())))
    if only_want or only_got or dup_got:
        failed += only_want + only_got + dup_got
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and rows else 1


if __name__ == "__main__":
    sys.exit(main())
