"""fugakuperf: plan and predict LLM training on Fugaku-class supercomputers."""


def __getattr__(name: str):
    # ``__version__`` is read from the package metadata when asked for: importlib.metadata
    # costs tens of milliseconds, which every command line would otherwise pay
    if name == "__version__":
        from fpcore import version
        return version()
    raise AttributeError(f"module 'fugakuperf' has no attribute {name!r}")
