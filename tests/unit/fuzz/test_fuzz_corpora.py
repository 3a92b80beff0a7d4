"""Every committed fuzz corpus replays cleanly, so a crash found once stays fixed.

The fuzz targets (``fuzz/targets/``) run here without atheris: each corpus file goes through its
target with the shared property (only the target's anonmail errors may escape) and the target's
own assertions (round trips, bounds).
"""

from __future__ import annotations

import pytest

from fuzz.registry import CORPUS_DIR, corpus_files, load_targets, run_input

TARGETS = load_targets()
CASES = [(name, path) for name in sorted(TARGETS) for path in corpus_files(name)]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_has_a_committed_corpus(name):
    assert corpus_files(name), f"run `python -m fuzz seed {name}` and commit {CORPUS_DIR / name}"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_target_rejects_what_it_must_not_let_through(name):
    """The property can fail: an exception outside the allowed errors escapes run_input."""
    original = TARGETS[name]

    def broken(data: bytes) -> None:
        raise RuntimeError("not an anonmail error")

    TARGETS[name] = original.__class__(name, broken, original.allowed, original.seeds, original.max_len)
    try:
        with pytest.raises(RuntimeError):
            run_input(name, b"")
    finally:
        TARGETS[name] = original


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_targets_seeds_build_and_replay(name):
    """`python -m fuzz seed NAME` keeps working: the seeds build and pass through their target."""
    seeds = list(TARGETS[name].seeds())
    assert seeds, f"{name} has no seeds"
    for data in seeds:
        run_input(name, data)


def test_no_corpus_without_a_target():
    orphans = sorted(p.name for p in CORPUS_DIR.iterdir() if p.is_dir() and p.name not in TARGETS)
    assert not orphans, f"corpus folders without a target: {orphans}"


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}/{p.name[:12]}" for n, p in CASES])
def test_corpus_file_replays(name, path):
    run_input(name, path.read_bytes())
