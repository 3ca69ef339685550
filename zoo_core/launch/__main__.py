"""`python -m zoo_core.launch`: torchrun with zoo's signal handling (see zoo_core.launch.main)."""

import sys

from zoo_core.launch import main

sys.exit(main())
