"""The old name of `validate.py` (other benchmarks import its fleet generator from here); runs it."""

from __future__ import annotations

from validate import generate, main

__all__ = ["generate", "main"]

if __name__ == "__main__":
    main()
