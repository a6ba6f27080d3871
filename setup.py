"""Build the hcltdx extensions.

HCLTDX_DEBUG=1 builds with assertions, -O0 -g and Cython line tracing
(usable by coverage and profilers): ``HCLTDX_DEBUG=1 pip install .``.
HCLTDX_SANITIZE=1 builds with AddressSanitizer and UBSan (no LTO); run it
with libasan preloaded: ``scripts/sanitize`` (docs/hardening.md).

The extensions list their ``.pyx`` sources; setuptools hands them to Cython's
``build_ext`` at build time, so making an sdist does not run Cython and the
sdist carries the ``.pyx`` files themselves (MANIFEST.in adds the rest).
"""

import glob
import os

import numpy
from setuptools import Extension, setup

DEBUG = os.environ.get("HCLTDX_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("HCLTDX_SANITIZE", "") not in ("", "0")

include_dirs = ["include", numpy.get_include()]
define_macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
# -Wextra applies to every C file of an extension, the Cython-generated ones
# included, and to the link-time optimisation step (where the LTO build's
# middle-end warnings are issued); scripts/check_artifacts.py counts the
# warnings per origin (docs/packaging.md).
warning_flags = ["-Wall", "-Wextra"]
extra_compile_args = ["-std=gnu11", *warning_flags]
directives = {
    "language_level": 3,
    "embedsignature": True,
    # Signatures as __text_signature__, so inspect.signature() works on
    # methods compiled without binding.
    "embedsignature.format": "clinic",
    # Plain method descriptors: CPython specialises calls to them (cyfunction
    # objects, binding=True, take its generic call path).
    "binding": False,
}

if DEBUG:
    define_macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    extra_compile_args += ["-O0", "-g", "-UNDEBUG"]
    directives.update(linetrace=True, boundscheck=True)
else:
    extra_compile_args += ["-O2", "-DNDEBUG"]
SAN_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
if SANITIZE:
    extra_compile_args += SAN_FLAGS

SIM_SOURCES = sorted(glob.glob("csrc/sim/*.c"))


def ext(name, sources, lto=False, **kw):
    missing = [s for s in sources if not os.path.exists(s)]
    if missing:
        # An sdist without its sources must not turn into a wheel without
        # the extension.
        raise FileNotFoundError(f"{name}: missing source files {missing}")
    return Extension(
        name,
        sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args=extra_compile_args + (["-flto=auto", "-fno-semantic-interposition"] if lto else []),
        depends=glob.glob("include/hcltdx/*") + glob.glob("csrc/sim/*.h") + glob.glob("hcltdx/**/*.pxd", recursive=True),
        extra_link_args=kw.pop("extra_link_args", []) + (SAN_FLAGS if SANITIZE else []),
        **kw,
    )


extensions = [
    ext("hcltdx._cabi", ["hcltdx/_cabi.pyx", "csrc/abi_probe.c", "csrc/sim/vmcs_catalogue.c"]),
    # The model's call chain crosses its C files; link-time optimisation (and
    # no semantic interposition, so exported functions can be inlined inside
    # the shared object) lets the compiler flatten it.
    ext("hcltdx._sim", ["hcltdx/_sim.pyx", *SIM_SOURCES], libraries=["pthread"],
        extra_link_args=[] if DEBUG or SANITIZE else ["-flto=auto", "-O2", "-fno-semantic-interposition", *warning_flags],
        lto=not (DEBUG or SANITIZE)),
    ext("hcltdx._core", ["hcltdx/_core.pyx"]),
    ext("hcltdx._simdev", ["hcltdx/_simdev.pyx"]),
    ext("hcltdx._poll", ["hcltdx/_poll.pyx"]),
]
for e in extensions:
    e.cython_directives = directives
    e.cython_include_dirs = ["hcltdx"]

setup(ext_modules=extensions)
