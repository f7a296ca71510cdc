"""Single-node throughput and commit latency over HTTP (issue: a single-node network).

Run: ``.venv/bin/python bench/node_throughput.py --json`` (the same as ``liangcao bench --json``).
Prints a table with the machine's core count, the signature-verification rate measured in the same run,
and the peak RSS of the node (with its verifier processes) and of this client; ``--json`` ends with one
JSON object on the last line. Results are kept in docs/benchmarks.md.
"""

from __future__ import annotations

from liangcao.cli.bench import bench_cmd

if __name__ == "__main__":
    import typer

    typer.run(bench_cmd)
