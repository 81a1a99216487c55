"""Only for what pyproject.toml cannot say: the fast path's C module."""

from setuptools import setup

setup(cffi_modules=["sfu/native/build.py:ffibuilder"])
