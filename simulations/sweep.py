"""``sweep``: run grids of parameters from a TOML file in parallel; write CSV, JSON and plots.

Config (strict: unknown keys are errors naming the file and key)::

    schema_version = 1
    seeds = [1, 2]            # every grid point runs once per seed; plots show the mean
    [base]                    # SimConfig values shared by every run (option names, _ not -)
    clients = 200
    [[sweep]]
    name = "delay"            # used in file names
    x = "delay_mean"          # the x axis of its plots (must be a grid key)
    grid = { delay_mean = [0.1, 0.5, 1.0], clients = [100, 400] }   # Cartesian product
    set = { lambda_payload = 0.0 }   # optional: values fixed for this sweep only
    plots = ["entropy_bits_mean", "latency_mean_s"]                 # one PNG per metric
    logx = true                      # optional: logarithmic x axis

Outputs in ``--out``: ``results.csv`` (one row per run), ``results.json`` (every summary, in
task order), ``timings.csv`` (``wall_s`` and ``events_per_s`` per run: the only values that
depend on the machine, kept out of the other two so that they are byte-identical wherever the
sweep ran) and ``<name>_<metric>.png``. Runs go to a Dask cluster (``--scheduler ADDRESS``) or to
a local one of ``--workers`` processes (at most 2 by default); the order of the results does not
depend on which worker finishes first.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path

from anonmail.config import Table, load_toml
from anonmail.errors import ConfigError
from simulations.metrics import TIMING_FIELDS
from simulations.model import SimConfig
from simulations.runner import run_config

__all__ = ["Sweep", "SweepSpec", "load_sweep", "run_sweep", "METRICS"]

#: Metrics a sweep may plot (numeric summary fields).
METRICS = (
    "latency_mean_s", "latency_p50_s", "latency_p95_s", "latency_p99_s", "entropy_bits_mean",
    "entropy_bits_p5", "entropy_bits_p50", "entropy_bits_p95", "recipient_entropy_bits_mean",
    "linking_success_rate", "cover_ratio", "messages_delivered", "messages_sent", "sim_events",
    "wall_s", "events_per_s",
)
_FIELDS = {f.name: f.type for f in fields(SimConfig)}


@dataclass(frozen=True)
class Sweep:
    """One named grid: the varied keys, the x axis and the metrics to plot."""

    name: str
    x: str
    grid: tuple[tuple[str, tuple], ...]
    plots: tuple[str, ...]
    fixed: tuple[tuple[str, object], ...] = ()  # values set for this sweep only
    logx: bool = False  # logarithmic x axis in its plots

    def points(self) -> list[dict]:
        """Every combination of grid values, in a stable order."""
        keys = [k for k, _ in self.grid]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in self.grid))]


@dataclass(frozen=True)
class SweepSpec:
    """A whole sweep file, validated."""

    path: str
    base: dict
    seeds: tuple[int, ...]
    sweeps: tuple[Sweep, ...]

    def tasks(self) -> list[tuple[str, dict, SimConfig]]:
        """(sweep name, varied values, config) for every run, in file order."""
        out = []
        for sweep in self.sweeps:
            for point in sweep.points():
                for seed in self.seeds:
                    try:
                        config = SimConfig(**{**self.base, **dict(sweep.fixed), **point, "seed": seed}).checked()
                    except ConfigError as exc:
                        raise ConfigError(f"{self.path}: sweep {sweep.name!r} point {point}: {exc}") from None
                    out.append((sweep.name, point, config))
        return out


def _value(table: Table, key: str) -> object:
    kind = _FIELDS[key]
    if kind == "int":
        return table.int(key)
    if kind == "bool":
        return table.bool(key)
    if kind == "str":
        return table.str(key)
    return table.float(key)


def _numbers(table: Table, key: str, default: object, *, integers: bool = False) -> tuple:
    """A non-empty list of numbers (Table has scalar accessors only; unknown keys still fail in finish())."""
    values = table._get(key, default)  # noqa: SLF001 - marks the key as read, like every accessor
    kinds = (int,) if integers else (int, float)
    if (not isinstance(values, list) or not values
            or not all(isinstance(v, kinds) and not isinstance(v, bool) for v in values)):
        raise table.error(key, f"must be a non-empty list of {'integers' if integers else 'numbers'}")
    return tuple(values)


def load_sweep(path: str | os.PathLike[str]) -> SweepSpec:
    """Read and check a sweep TOML file; ConfigError naming the file and key on any problem."""
    root = load_toml(path)
    seeds = _numbers(root, "seeds", [1], integers=True)
    base_table = root.table("base")
    base = {key: _value(base_table, key) for key in _FIELDS if key != "seed" and base_table.has(key)}
    sweeps = []
    names: set[str] = set()
    for table in root.tables("sweep"):
        name = table.str("name", check=lambda s: None if s and s.replace("_", "").replace("-", "").isalnum()
                         else "must be letters, digits, - and _")
        if name in names:
            raise table.error("name", f"{name!r} is used twice")
        names.add(name)
        set_table = table.table("set")
        fixed = tuple((key, _value(set_table, key)) for key in _FIELDS if key != "seed" and set_table.has(key))
        grid_table = table.table("grid", required=True)
        grid = [(key, _numbers(grid_table, key, None)) for key in _FIELDS
                if _FIELDS[key] not in ("str", "bool") and key != "seed" and grid_table.has(key)]
        if not grid:
            raise table.error("grid", "must vary at least one simulation parameter")
        x = table.str("x", default=grid[0][0])
        if x not in dict(grid):
            raise table.error("x", f"{x!r} is not one of the grid keys ({', '.join(k for k, _ in grid)})")
        plots = table.str_list("plots", default=["entropy_bits_mean"])
        for metric in plots:
            if metric not in METRICS:
                raise table.error("plots", f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
        logx = table.bool("logx", default=False)
        if logx and min(dict(grid)[x]) <= 0:
            raise table.error("logx", f"needs positive values of {x}")
        sweeps.append(Sweep(name, x, tuple(grid), tuple(plots), fixed, logx))
    root.finish()
    if not sweeps:
        raise ConfigError(f"{root.path}: no [[sweep]] table")
    spec = SweepSpec(root.path, base, seeds, tuple(sweeps))
    spec.tasks()  # every point must be a valid config: fail before any work
    return spec


def run_sweep(path: str | os.PathLike[str], out: str | os.PathLike[str], *, scheduler: str | None = None,
              workers: int | None = None, plots: bool = True, progress: bool = True,
              scheduler_timeout: float = 30.0) -> list[dict]:
    """Run every point of the sweep file on a Dask cluster, write results and plots into ``out``; return the rows.

    ``scheduler``: address of a running ``dask scheduler`` (its workers must have this package
    installed); None starts a local cluster of ``workers`` processes for the sweep. A scheduler
    that does not answer within ``scheduler_timeout`` seconds is a ConfigError.
    """
    spec = load_sweep(path)
    tasks = spec.tasks()
    outdir = Path(out)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{outdir}: cannot create output directory: {exc.strerror}") from None
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    summaries = _run_on_dask([config for _, _, config in tasks], scheduler, workers, progress, scheduler_timeout)
    rows = []
    for (name, point, config), summary in zip(tasks, summaries):
        row = {"sweep": name, "seed": config.seed, **{f"param_{k}": v for k, v in point.items()}}
        row.update({m: summary[m] for m in METRICS})
        rows.append(row)
    # Results are a pure function of the file; timings (which the machine decides) go apart.
    _write_csv(outdir / "results.csv", [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows])
    _write_csv(outdir / "timings.csv", [{"sweep": r["sweep"], "seed": r["seed"], **{k: r[k] for k in TIMING_FIELDS}}
                                        for r in rows])
    (outdir / "results.json").write_text(json.dumps(
        [{"sweep": name, "point": point, "summary": {k: v for k, v in summary.items() if k not in TIMING_FIELDS}}
         for (name, point, _), summary in zip(tasks, summaries)], indent=1, allow_nan=False) + "\n")
    if plots:
        from simulations.plots import plot_sweeps

        plot_sweeps(spec, rows, outdir)
    return rows


def _run_on_dask(configs: list[SimConfig], scheduler: str | None, workers: int, progress: bool,
                 scheduler_timeout: float = 30.0) -> list[dict]:
    """Every config's summary, in order, computed on the cluster (or a local one)."""
    import logging

    from distributed import Client, LocalCluster, as_completed

    # The local cluster's own chatter (worker start/stop) is not the sweep's output.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    summaries: list[dict | None] = [None] * len(configs)
    with ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=":0", host="127.0.0.1"))
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=scheduler_timeout))
            except (OSError, TimeoutError, ValueError) as exc:
                raise ConfigError(f"--scheduler {scheduler}: cannot reach the Dask scheduler: {exc}") from None
        futures = client.map(run_config, configs, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        bar = stack.enter_context(_progress(progress))
        job = bar.add_task("sweep", total=len(configs)) if bar is not None else None
        for future in as_completed(futures):
            summaries[index[future.key]] = future.result()
            if bar is not None:
                bar.advance(job)
    return [s for s in summaries if s is not None]


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(enabled: bool):
    if not enabled:
        return _NoBar()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True))
