"""`python -m transformers_legrad.cli ...` (and `accelerate launch -m transformers_legrad.cli ...`): `legrad ...`."""

import sys

from . import main

sys.exit(main())
