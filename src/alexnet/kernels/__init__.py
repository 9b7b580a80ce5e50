"""Hand-written device kernels.

Each module imports its compiler (Triton) at import time, so importing it raises ImportError where
that compiler is absent; callers import lazily and fall back to plain PyTorch (see
``alexnet.models.lrn.local_response_norm``). Nothing here imports from the rest of the package.
"""
