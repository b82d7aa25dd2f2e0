"""``python -m icws_fast.gateway``: the same as the ``icws-gateway`` console script."""

import sys

from icws_fast.gateway.cli import main

sys.exit(main())
