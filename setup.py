"""Build hook: compile the simulator's hot loop and the Sphinx hop's symmetric crypto with Cython.

Everything else is in pyproject.toml. Both extensions are optional: if one cannot be built (no
compiler, no Cython, no OpenSSL headers), the install still succeeds and the pure-Python code
runs instead, which gives the same results, only slower.
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
            print(f"warning: {ext.name} not compiled ({exc}); its pure-Python fallback will run", file=sys.stderr)


try:
    from Cython.Build import cythonize
except ImportError:  # no Cython: pure-Python simulator
    ext_modules = []
else:
    ext_modules = cythonize(
        [
            Extension("simulations._fastloop", ["simulations/_fastloop.pyx"], extra_compile_args=["-O2", "-ffp-contract=off"]),
            # needs OpenSSL 3's headers (libssl-dev, also an i2pd build dependency) and libcrypto
            Extension("anonmail.core._sphinxfast", ["anonmail/core/_sphinxfast.pyx"], libraries=["crypto"],
                      extra_compile_args=["-O2"]),
        ],
        language_level=3,
        quiet=True,
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
