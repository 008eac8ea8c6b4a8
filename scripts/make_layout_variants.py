#!/usr/bin/env python3
"""Rewrite telemetry Parquet in the layouts other tools produce, for the backfill tests.

Usage: make_layout_variants.py TELEMETRY_GLOB OUT_DIR
Writes OUT_DIR/{shuffled_polars,grouped_duckdb,ordered_pyarrow}/part.parquet:
- shuffled_polars: rows shuffled (seeded), ts as int64 milliseconds, four sensor columns
  dropped, written by Polars;
- grouped_duckdb: rows grouped by vehicle, each vehicle in time order, ts as
  timestamp(us, UTC), written by DuckDB's COPY in small row groups;
- ordered_pyarrow: rows in time order, ts as timestamp(ms, UTC), float32 sensor columns,
  written by pyarrow.
"""
import os
import sys

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

src, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
for d in ("shuffled_polars", "grouped_duckdb", "ordered_pyarrow"):
    os.makedirs(os.path.join(out, d), exist_ok=True)

df = pl.read_parquet(src)
dropped = ["fuel_level_pct", "ambient_temp_c", "throttle_pct", "odometer_km"]
shuffled = (
    df.with_columns(pl.col("ts").dt.epoch("ms").alias("ts"))
    .drop(dropped)
    .sample(fraction=1.0, shuffle=True, seed=7)
)
shuffled.write_parquet(os.path.join(out, "shuffled_polars", "part.parquet"), row_group_size=5000)

con.execute(f"""
    COPY (SELECT * REPLACE (CAST(ts AS TIMESTAMPTZ) AS ts) FROM read_parquet('{src}')
          ORDER BY vehicle_id, ts)
    TO '{os.path.join(out, "grouped_duckdb", "part.parquet")}' (FORMAT parquet, ROW_GROUP_SIZE 4096)""")

table = df.sort(["ts", "vehicle_id"]).to_arrow()
fields = []
for f in table.schema:
    if f.name == "ts":
        fields.append(pa.field("ts", pa.timestamp("ms", tz="UTC")))
    elif pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type):
        fields.append(pa.field(f.name, pa.string()))
    elif pa.types.is_floating(f.type):
        fields.append(pa.field(f.name, pa.float32()))
    else:
        fields.append(f)
pq.write_table(table.cast(pa.schema(fields)), os.path.join(out, "ordered_pyarrow", "part.parquet"),
               row_group_size=10000)
print("variants written")
