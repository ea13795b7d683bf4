"""``python -m transformer_mt``: the transformer-mt command.

It is also what torchrun starts: ``torchrun ... -m transformer_mt train``.
"""

import sys

from .cli import main

sys.exit(main())
