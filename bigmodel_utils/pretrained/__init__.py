"""A real pretrained language model, offline: SmolLM2-135M-Instruct read from its GGUF file, rebuilt from
scratch in NumPy and loaded into KerasHub, prompted, decoded and evaluated. One module per job:

* :mod:`.weights`: find, verify and read the GGUF file (:func:`read_gguf`), undoing llama.cpp's row order.
* :mod:`.from_scratch`: RMSNorm, rotary embeddings, SwiGLU, grouped-query attention and a forward pass.
* :mod:`.keras_model`: the KerasHub model, its preset folder (converted once) and :func:`load_model`.
* :mod:`.chat`: the chat template; :mod:`.decode`: the book's decoding loop; :mod:`.evaluate`: the harness.

Used in chapter 8 (and by the post-training and retrieval chapters after it).
"""
