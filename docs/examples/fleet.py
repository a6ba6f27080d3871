"""Read a folder of hcltdx recordings (Parquet) with DuckDB, without hcltdx,
and plot one field across hosts.

    pip install duckdb matplotlib
    python docs/examples/fleet.py RECORDINGS_DIR [FIELD] [-o fleet.png]

Each file holds t_ns, one uint64 column per polled field, and the constant
columns host, vp and vtl (`hcltdx record --format parquet`).
"""

import argparse
import os

import duckdb
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("field", nargs="?", default="VMX_VMCS_EXIT_REASON")
    ap.add_argument("-o", "--output", default="fleet.png")
    a = ap.parse_args()
    files = os.path.join(a.folder, "*.parquet")
    con = duckdb.connect()

    # Per host: samples, time span and how often the field changed.
    summary = con.execute(f"""
        WITH s AS (
            SELECT host, vp, t_ns, "{a.field}" AS v,
                   lag("{a.field}") OVER (PARTITION BY host, vp ORDER BY t_ns) AS prev
            FROM read_parquet('{files}', union_by_name = true))
        SELECT host, vp, count(*) AS samples,
               (max(t_ns) - min(t_ns)) / 1e9 AS seconds,
               count(*) FILTER (WHERE v <> prev) AS changes
        FROM s GROUP BY host, vp ORDER BY host, vp""").fetchall()
    for host, vp, n, sec, ch in summary:
        print(f"{host:<16} VP {vp}: {n} samples over {sec:.2f} s, {a.field} changed {ch} times")

    # The field over time, one line per host, time relative to each host's start.
    rows = con.execute(f"""
        SELECT host, (t_ns - min(t_ns) OVER (PARTITION BY host)) / 1e9 AS t, "{a.field}" AS v
        FROM read_parquet('{files}', union_by_name = true) ORDER BY host, t""").fetchnumpy()
    hosts = sorted(set(rows["host"]))
    fig, axes = plt.subplots(len(hosts), 1, sharex=True, sharey=True, squeeze=False,
                             figsize=(10, 1.6 * len(hosts) + 1))
    for ax, host in zip(axes[:, 0], hosts):
        m = rows["host"] == host
        ax.step(rows["t"][m], rows["v"][m].astype(float), where="post", linewidth=0.8)
        ax.set_ylabel(host, rotation=0, ha="right", va="center")
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{int(v):#x}")
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the host's first sample")
    fig.suptitle(f"{a.field} across {len(hosts)} hosts")
    fig.tight_layout()
    fig.savefig(a.output, dpi=110)
    print(f"wrote {os.path.abspath(a.output)}")


if __name__ == "__main__":
    main()
