"""Build hook: compile the simulator's hot loop with Cython when a C compiler is there.

Everything else is in pyproject.toml. The extension is optional: if it cannot be built (no
compiler, no Cython), the install still succeeds and the simulator runs its pure-Python loop,
which gives the same results, only slower.
"""

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning (the pure-Python loop stands in)."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any failure here only costs speed
            print(f"warning: simulator loop not compiled ({exc}); the pure-Python loop will run", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: {ext.name} not compiled ({exc}); the pure-Python loop will run", file=sys.stderr)


try:
    from Cython.Build import cythonize
except ImportError:  # no Cython: pure-Python simulator
    ext_modules = []
else:
    ext_modules = cythonize(
        [Extension("simulations._fastloop", ["simulations/_fastloop.pyx"], extra_compile_args=["-O2", "-ffp-contract=off"])],
        language_level=3,
        quiet=True,
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
