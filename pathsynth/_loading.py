"""One lock around every model construction in the process.

diffusers/accelerate build models under ``init_empty_weights``, which patches ``torch.nn.Module`` globally for
a moment; a model built in another thread at that moment gets "meta" tensors without data. The app loads
models from a warm-up thread while requests arrive, so every loader takes this lock.
"""

import threading

MODEL_LOADING_LOCK = threading.RLock()
