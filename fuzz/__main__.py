"""``python -m fuzz``: list, seed, replay and run the fuzz targets (``make fuzz`` calls ``run``).

    python -m fuzz list                        targets and corpus sizes
    python -m fuzz seed [NAME...]              write each target's seeds into fuzz/corpus/NAME/
    python -m fuzz replay [NAME...]            run every corpus file through its target (no atheris)
    python -m fuzz run [--seconds S] [--jobs J] [--no-merge] [NAME...]
                                               fuzz each target S seconds (atheris), J at a time;
                                               print executions/s and coverage; minimise the corpus

``run`` keeps its work (new inputs, logs, crashes) in ``fuzz/.work/`` (not committed) and, unless
``--no-merge``, replaces ``fuzz/corpus/NAME/`` by libFuzzer's minimised merge of the old corpus
and the new inputs: the inputs that cover every feature seen, and no others. A crash leaves
``fuzz/.work/NAME/crash-*``: fix the bug, copy the file into the corpus, and the replay test
keeps it fixed. Exit status 1 if any target crashed or failed to run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fuzz.registry import CORPUS_DIR, corpus_files, load_targets, run_input, write_seed

WORK_DIR = Path(__file__).resolve().parent / ".work"
_COV = re.compile(r"\bcov: (\d+) ft: (\d+)")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)


def _names(args_names: list[str]) -> list[str]:
    targets = load_targets()
    unknown = [n for n in args_names if n not in targets]
    if unknown:
        raise SystemExit(f"unknown fuzz target(s) {', '.join(unknown)}; known: {', '.join(sorted(targets))}")
    return args_names or sorted(targets)


def _corpus_size(name: str) -> tuple[int, int]:
    files = corpus_files(name)
    return len(files), sum(f.stat().st_size for f in files)


def cmd_list(args: argparse.Namespace) -> int:
    for name in _names(args.names):
        files, size = _corpus_size(name)
        print(f"{name:<20} {files:>5} corpus files {size:>9} bytes")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    targets = load_targets()
    for name in _names(args.names):
        seeds = list(targets[name].seeds())
        for data in seeds:
            write_seed(name, data)
        print(f"{name}: {len(seeds)} seeds in {CORPUS_DIR / name}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    failed = 0
    for name in _names(args.names):
        for path in corpus_files(name):
            try:
                run_input(name, path.read_bytes())
            except Exception as exc:  # noqa: BLE001 - report every failing input, then fail
                failed += 1
                print(f"FAIL {name} {path.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"{name}: {len(corpus_files(name))} corpus files replayed")
    return 1 if failed else 0


def _child(name: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", "fuzz.child", name, *flags]


def _fuzz_one(name: str, seconds: int, merge: bool) -> dict:
    """Fuzz one target; its figures as a dict."""
    target = load_targets()[name]
    work = WORK_DIR / name
    new_inputs = work / "corpus"
    new_inputs.mkdir(parents=True, exist_ok=True)
    (CORPUS_DIR / name).mkdir(parents=True, exist_ok=True)
    flags = [f"-max_total_time={seconds}", "-print_final_stats=1", f"-max_len={target.max_len}", "-timeout=20",
             "-rss_limit_mb=2048", f"-artifact_prefix={work}/", str(new_inputs), str(CORPUS_DIR / name)]
    started = time.monotonic()
    with open(work / "log.txt", "wb") as log:
        proc = subprocess.run(_child(name, *flags), stdout=log, stderr=subprocess.STDOUT, timeout=seconds + 600,
                              cwd=Path(__file__).resolve().parent.parent)
    text = (work / "log.txt").read_text(errors="replace")
    stats = {k: int(v) for k, v in _STAT.findall(text)}
    cov = _COV.findall(text)
    result = {
        "target": name, "seconds": round(time.monotonic() - started, 1), "exit": proc.returncode,
        "execs": stats.get("number_of_executed_units", 0), "execs_per_s": stats.get("average_exec_per_sec", 0),
        "cov": int(cov[-1][0]) if cov else 0, "ft": int(cov[-1][1]) if cov else 0,
        "crashes": sorted(p.name for p in work.glob("crash-*")) + sorted(p.name for p in work.glob("timeout-*"))
        + sorted(p.name for p in work.glob("oom-*")),
    }
    if merge and proc.returncode == 0:
        merged = work / "merged"
        shutil.rmtree(merged, ignore_errors=True)
        merged.mkdir()
        done = subprocess.run(_child(name, "-merge=1", f"-max_len={target.max_len}", str(merged),
                                     str(CORPUS_DIR / name), str(new_inputs)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800,
                              cwd=Path(__file__).resolve().parent.parent)
        if done.returncode == 0 and any(merged.iterdir()):
            shutil.rmtree(CORPUS_DIR / name)
            shutil.copytree(merged, CORPUS_DIR / name)
            shutil.rmtree(new_inputs)
    result["corpus_files"], result["corpus_bytes"] = _corpus_size(name)
    return result


def cmd_run(args: argparse.Namespace) -> int:
    names = _names(args.names)
    WORK_DIR.mkdir(exist_ok=True)
    print(f"fuzzing {len(names)} target(s), {args.seconds} s each, {args.jobs} at a time", flush=True)
    results = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for result in pool.map(lambda n: _fuzz_one(n, args.seconds, not args.no_merge), names):
            results.append(result)
            status = "ok" if result["exit"] == 0 and not result["crashes"] else f"FAILED ({result['exit']})"
            print(f"{result['target']:<20} {result['execs']:>10} execs {result['execs_per_s']:>7} exec/s "
                  f"cov {result['cov']:>5} ft {result['ft']:>6}  corpus {result['corpus_files']:>4} files "
                  f"{result['corpus_bytes']:>8} B  {status} {' '.join(result['crashes'])}", flush=True)
    (WORK_DIR / "summary.json").write_text(json.dumps(results, indent=1))
    return 0 if all(r["exit"] == 0 and not r["crashes"] for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    """The ``python -m fuzz`` command line."""
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("list", "seed", "replay", "run"):
        p = sub.add_parser(command)
        p.add_argument("names", nargs="*", help="targets (default: all)")
        if command == "run":
            p.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
            p.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once (default 1)")
            p.add_argument("--no-merge", action="store_true", help="leave the committed corpus as it is")
    args = parser.parse_args(argv)
    return {"list": cmd_list, "seed": cmd_seed, "replay": cmd_replay, "run": cmd_run}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
