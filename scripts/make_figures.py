#!/usr/bin/env python
"""Redraw every chart of `docs/figures` from the committed records in `results/`.

    python scripts/make_figures.py                      # results/ -> docs/figures/
    python scripts/make_figures.py --output_dir /tmp/figures

The charts and the commands that make the image grids are listed in `asintrovae_hf.experiments.figures`.
"""

import sys

from asintrovae_hf.experiments.figures import main

if __name__ == "__main__":
    sys.exit(main())
