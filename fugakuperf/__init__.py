"""fugakuperf: plan and predict LLM training on Fugaku-class supercomputers."""

__version__ = "0.1.0"
