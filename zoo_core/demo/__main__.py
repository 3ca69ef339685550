"""`python -m zoo_core.demo` (`make demo`)."""

import sys

from zoo_core.demo import main

sys.exit(main())
