"""Optional integrations with other libraries, each imported only when used.

* :mod:`optix.contrib.nnx`: Flax NNX capture of K-FAC's layer statistics
  (``pip install optix[flax]``).
"""
