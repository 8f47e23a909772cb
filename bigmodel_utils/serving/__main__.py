"""``python -m bigmodel_utils.serving``: serve chapter 7's models until SIGTERM or SIGINT (see :mod:`.cli`)."""

import sys

from bigmodel_utils.serving.cli import main

sys.exit(main())
