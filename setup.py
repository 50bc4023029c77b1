# setup.cfg holds the metadata; this file exists only because `cffi_modules`
# (the out-of-line CFFI build of the native core) is a setup() keyword.
from setuptools import setup

setup(cffi_modules=["src/isobox/_native/build.py:ffibuilder"])
