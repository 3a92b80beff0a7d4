"""One libFuzzer process (atheris) for one target: ``python -m fuzz.child NAME [libFuzzer args]``.

anonmail and mixnode are imported inside ``atheris.instrument_imports`` so their code is
coverage-instrumented; everything else (PyNaCl, cryptography, the standard library) is not.
"""

from __future__ import annotations

import sys

import atheris


def main(argv: list[str]) -> None:
    """Fuzz target ``argv[1]``; the remaining arguments go to libFuzzer."""
    name = argv[1]
    with atheris.instrument_imports(include=["anonmail", "mixnode", "fuzz"]):
        from fuzz.registry import load_targets, run_input

        targets = load_targets()
    if name not in targets:
        raise SystemExit(f"unknown fuzz target {name!r}; known: {', '.join(sorted(targets))}")

    def one_input(data: bytes) -> None:
        run_input(name, data)

    # libFuzzer runs argv[0] again for -merge=1 (through the shell): make it this very command.
    atheris.Setup([f"{sys.executable} -m fuzz.child {name}", *argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
