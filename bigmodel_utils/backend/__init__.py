"""The backend seam: every branch on the Keras backend (TensorFlow, JAX, PyTorch) lives here.

:mod:`.tensorflow_only` is the one module that imports TensorFlow; :mod:`.autodiff` takes gradients on any
backend; :mod:`.devices` lists the accelerators the backend sees. Code above this layer calls these functions
instead of asking which backend runs.
"""
