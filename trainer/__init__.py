"""The reference trainer: the real GPT model, measured, on one node or many.

It shares only the model description (perfmodel.model.ModelSpec) with the
simulator. Parameters live in one flat buffer with named views (params.py); the
layers' forward and backward kernels are in kernels.py; data comes from UTF-8
text through a byte-level tokenizer or from token shards (data.py).
"""
