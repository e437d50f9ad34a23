"""`python3 -m boot.vcluster`: the same as the `oar-vcluster` command."""

import sys

from boot.vcluster.cli import main

sys.exit(main())
