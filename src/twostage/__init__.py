"""twostage: two-stage domain-adapted training for real-world image SR and restoration.

The public Python API (docs/api.md) lives in `twostage.api` and is reached from here: its names
load it on first use (PEP 562), so `import twostage` and `twostage --help` import nothing of
it, and it imports numpy and torch only when a function is called.
"""

__version__ = "0.1.0"

_API = ("Mean", "Model", "RunResults", "Scores", "degrade", "load", "run", "score", "train_network")

__all__ = ["UserError", "__version__", *_API]


def __getattr__(name: str) -> object:
    """`twostage.load` and the other API names, imported from twostage.api when first used."""
    if name == "UserError":
        from twostage.errors import UserError

        return UserError
    if name in _API:
        from twostage import api

        value = getattr(api, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'twostage' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
