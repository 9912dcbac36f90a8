"""Metadata lives in setup.cfg; this file only adds the optional C extension.

``ferv39k_hf.clips.ckernel`` (crop, resize, flip and normalise in one pass) needs a C
compiler with GCC vector extensions (GCC or Clang). Where it cannot be built the
install still succeeds, and ``VideoClipTransform`` uses its torch path.
"""

import sys

from setuptools import Extension, setup

extensions = []
if sys.platform != "win32":  # MSVC has no GCC vector extensions
    extensions.append(
        Extension("ferv39k_hf.clips.ckernel", ["ferv39k_hf/clips/ckernel.c"], extra_compile_args=["-O3"], optional=True)
    )

setup(ext_modules=extensions)
