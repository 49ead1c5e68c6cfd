"""`python -m taskscout`: the same CLI as the `taskscout` console script."""

import sys

from taskscout.cli import main

sys.exit(main())
