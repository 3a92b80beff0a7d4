"""Imports run one way, down the layers of docs/design.md ("Layers"); no package imports another for plumbing.

Every module of ``anonmail``, ``mixnode`` and ``simulations`` is parsed with :mod:`ast` and each of
its imports (module level, inside functions and under ``TYPE_CHECKING`` alike) is checked: a
module may import its own layer or a lower one, never a higher one. Among the services only the
provider may import ``mixnode`` (it forwards with the mix engine).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("anonmail", "mixnode", "simulations")

#: Layer of each module, by the longest matching dotted prefix (lowest first).
LAYERS: dict[str, int] = {
    # 0: the sans-IO core and what it stands on
    "anonmail": 0,  # the package itself (__version__)
    "anonmail.errors": 0,
    "anonmail.config": 0,
    "anonmail.keyfiles": 0,  # key files on disk (0600, atomic), below the transports that keep onion keys
    "anonmail.core": 0,
    # 1: transports
    "anonmail.net": 1,
    # 2: clients of our protocols, and what every daemon shares
    "anonmail.clients": 2,
    "anonmail.daemon": 2,
    # 3: the services
    "mixnode": 3,
    "anonmail.provider": 3,
    "anonmail.agent": 3,
    "anonmail.bridge": 3,  # the agent's mail-client face: it works on the agent's store, the agent starts it
    # 4: what runs whole networks, measures them, or dispatches to every service
    "anonmail.testnet": 4,
    "anonmail.bench": 4,
    "mixnode.cli": 4,
    "simulations": 4,
    # 5: the umbrella command line, which dispatches to everything and is imported by nothing
    "anonmail.cli": 5,
}
NAMES = {0: "core", 1: "net", 2: "clients/daemon", 3: "services", 4: "testnet/bench/cli", 5: "umbrella cli"}

#: The services (layer 3) are siblings that do not import each other, except these.
SERVICES = ("mixnode", "anonmail.provider", "anonmail.agent")
SERVICE_IMPORTS_ALLOWED = {("anonmail.provider", "mixnode")}
#: ... and only the mix engine: not the authority, the mix's config or its command line.
NOT_THE_ENGINE = ("mixnode.authority", "mixnode.config", "mixnode.cli")


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name (None for a module outside the map)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def service_of(module: str) -> str | None:
    """Which service package a module belongs to, if any."""
    return next((s for s in SERVICES if module == s or module.startswith(s + ".")), None)


def module_name(path: Path) -> str:
    """The dotted name of a source file."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) for every import of one of our packages in a source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from anonmail import cli`` imports a module; ``from anonmail.x import name`` a name in it.
            names = [f"{target}.{alias.name}" if layer_of(f"{target}.{alias.name}") is not None
                     and (ROOT / Path(*f"{target}.{alias.name}".split("."))).with_suffix(".py").exists()
                     else target for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in PACKAGES]
    return found


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in sources() if layer_of(module_name(p)) is None]
    assert unplaced == [], f"place these modules in LAYERS (and in docs/design.md): {unplaced}"


def test_no_import_runs_up_a_layer():
    upward = []
    for path in sources():
        module = module_name(path)
        own = layer_of(module)
        for line, target in imported(path, module):
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({NAMES[own]}) imports {target} ({NAMES[theirs]})")
    assert upward == []


def test_services_do_not_import_each_other_for_plumbing():
    crossing = []
    for path in sources():
        module = module_name(path)
        mine = service_of(module)
        if mine is None or layer_of(module) != 3:
            continue
        for line, target in imported(path, module):
            theirs = service_of(target)
            if theirs is None or theirs == mine:
                continue
            engine = not any(target == m or target.startswith(m + ".") for m in NOT_THE_ENGINE)
            if (mine, theirs) not in SERVICE_IMPORTS_ALLOWED or not engine:
                crossing.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert crossing == []


def test_the_check_sees_an_upward_import(tmp_path):
    # The import this test was written against: a service CLI taking a helper from the umbrella CLI.
    package = tmp_path / "mixnode"
    package.mkdir()
    (package / "cli.py").write_text("def main():\n    from anonmail.cli import run_command\n")
    (found,) = imported(package / "cli.py", "mixnode.cli")
    assert found == (2, "anonmail.cli") and layer_of(found[1]) > layer_of("mixnode.cli")
    assert layer_of("mixnode.node") == 3 and layer_of("anonmail.net.tor") == 1 and layer_of("nowhere") is None
