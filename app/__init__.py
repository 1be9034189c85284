"""The FastAPI service around the engine (see docs/ARCHITECTURE.md).

Requests run the engine in parallel threads, each on small matrices. A multi-threaded BLAS on top
of that oversubscribes the cores: on a busy 2-core machine a LeNet-5 training step went from
~35 ms to over a second with OpenBLAS spinning its own threads. So the server asks for one BLAS
thread per request thread, unless the environment already says otherwise. This only takes effect
when ``app`` is imported before NumPy, as it is under ``cnnviz`` and ``uvicorn app.main:app``.
"""

import os

# NumPy's wheels bundle OpenBLAS; other libraries' thread pools (MKL, OpenMP) are left alone.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
