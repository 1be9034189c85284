"""The engine tests run with one BLAS thread, as the server does (app/__init__.py): on the shared
2-core machine OpenBLAS's spinning worker threads made a 150-step training test take 30 s instead
of 1.3 s, whatever imported NumPy first."""

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield
