"""Loaded for every test path under the repository root.

pytest's importlib mode names test modules after their folders (`kernels.tests.test_conv`) and
puts a placeholder `kernels` module in sys.modules for the repository's kernels/ folder. That
shadows the PyPI package `kernels`, which transformers (>= 5.25) imports. Import the real one
first, when it is installed, so the placeholder is never made.
"""

import importlib.util

if importlib.util.find_spec("kernels") is not None and importlib.util.find_spec("kernels").origin:
    import kernels  # noqa: F401
