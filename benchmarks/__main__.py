"""`python -m benchmarks`: the performance suite (benchmarks/suite.py), from the repository root."""

import sys

from benchmarks.suite import main

sys.exit(main())
