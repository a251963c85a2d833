"""
The experiments that measure the method, apart from the library they measure: the 2D toy comparison of the
objectives (`toy/`, behind `asintrovae-toy2d`), the image experiments' library code (`images/`: the robustness-grid
tables and heat maps of `scripts/digits_benchmark.py` and of the toy grids) and the speed and memory measurements
(`speed/`, behind `scripts/benchmark.py`). A new experiment goes here; `import asintrovae_hf` imports none of it.
"""
