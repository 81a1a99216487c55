"""Only for what pyproject.toml cannot say: the fast path's C module."""

from setuptools import setup

setup(cffi_modules=["sfu/fanout_native_build.py:ffibuilder"])
