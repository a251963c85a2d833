"""
The training application behind `asintrovae-train` (`accelerate launch -m asintrovae_hf.commands.train`): its options
(`args.py`), parsed once into the frozen [`TrainingConfig`] that everything after reads (`config.py`), one
optimisation step of the encoder and the decoder (`train_step.py`), the Accelerate loop with EMA, logging and sample
grids (`loop.py`) between its set-up (`setup.py`, the images in `inputs.py`) and its outputs (`outputs.py`), the
command line (`cli.py`), crash-safe checkpoints (`checkpointing.py`), validation while training and `best/`
(`validation.py`), the running loss log with its NaN check (`loss_log.py`), the mixed-precision checks
(`precision.py`) and the image grids (`image_grids.py`). A change to how a run is configured, stepped, logged, saved
or resumed goes here. The loop is imported from `loop.py`, not here, so
that importing the package does not import Accelerate.
"""

from .config import TrainingConfig
from .train_step import train_step

__all__ = ["TrainingConfig", "train_step"]
