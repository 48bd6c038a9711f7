"""The random stream every sampling pipeline draws its noise from."""

from __future__ import annotations

from typing import Any

import numpy as np


def torch_generator(seed: int | list[int]) -> Any:
    """A CPU ``torch.Generator`` seeded from an int or a list of ints (e.g. ``[seed, chunk]``).

    Every generator draws its noise from one, so samples do not depend on the device's random
    stream.
    """
    import torch

    return torch.Generator("cpu").manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
