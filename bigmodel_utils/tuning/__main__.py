"""``python -m bigmodel_utils.tuning``: one chief or worker process of a distributed search."""

import sys

from bigmodel_utils.tuning.distributed import main

sys.exit(main())
