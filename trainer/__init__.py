"""The reference trainer: the real GPT model in Numba, measured, on one node or many.

It shares only the model description (perfmodel.model.ModelSpec) with the simulator.
"""
