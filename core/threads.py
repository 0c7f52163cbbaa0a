"""One thread each for torch, faiss and OpenMP in serving processes.

On two cores, OpenMP worker threads spin-waiting between torch and faiss calls cost
30+ ms at p99. Call limit_threads() before importing torch or faiss.
"""

from __future__ import annotations

import os


def limit_threads() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import faiss
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1) if torch.get_num_interop_threads() != 1 else None
    faiss.omp_set_num_threads(1)
