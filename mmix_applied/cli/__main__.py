"""``python -m mmix_applied.cli``: the ``mmix-applied`` command."""

import sys

from mmix_applied.cli.main import main

sys.exit(main())
