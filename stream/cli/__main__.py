"""``python -m stream.cli``: what the ``xdrec`` script runs (child processes start it so)."""

import sys

from stream.cli.main import main

sys.exit(main())
