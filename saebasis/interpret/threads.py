"""Run loops of tiny tensor ops on one thread.

NMF updates and Gram-Schmidt steps on matrices of a few dozen rows take microseconds each; with several
intra-op threads, thread wake-ups dominate, and on a busy machine (more runnable processes than cores) one
iteration can take milliseconds: 1000 NMF iterations on a 40 x 8 matrix took 37 s on the default threads with more
runnable processes than cores, 0.1 s on one thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
