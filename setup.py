# setup.cfg holds the metadata; this file exists only for what setup.cfg cannot say:
# `cffi_modules` (the out-of-line CFFI build of the native core) is a setup() keyword, and
# the wheel's tag depends on the interpreter building it.
import sysconfig

from setuptools import setup

# cffi compiles the core against the stable ABI (Py_LIMITED_API; it is already
# _core.abi3.so), so one wheel serves every CPython from python_requires' 3.9 on: tag it
# cp39-abi3 rather than the building interpreter's cpXY-cpXY. A free-threaded CPython has
# no stable ABI before 3.15 (cffi then builds a version-specific module): keep its own tag.
limited_api = None if sysconfig.get_config_var("Py_GIL_DISABLED") else "cp39"

setup(
    cffi_modules=["src/isobox/_native/build.py:ffibuilder"],
    options={"bdist_wheel": {"py_limited_api": limited_api}} if limited_api else {},
)
