"""fugakuperf: plan and predict LLM training on Fugaku-class supercomputers."""

from fpcore import version

__version__ = version()
