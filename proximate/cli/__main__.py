"""``python -m proximate.cli``: the ``proximate`` command without the installed console script."""

import sys

from proximate.cli import main

if __name__ == "__main__":
    sys.exit(main())
