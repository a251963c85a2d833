"""
The image experiments' library code: the summary of a robustness grid of runs (`robustness_grid.py`: the grid's
cells, its markdown table and a heat map per dataset). The command lines that run the experiments stay in `scripts/`
(`digits_benchmark.py`, `heldout_benchmark.py`, `latent_sampler_benchmark.py`).
"""
