"""Errors shared by the plugin's steps."""


class MismatchError(RuntimeError):
    """Results already on disk were made by another extractor, matcher or configuration than this run's."""

    def __init__(self, mismatch: str, hint: str):
        super().__init__(mismatch, hint)  # both in args, so that the error pickles and copies
        self.mismatch, self.hint = mismatch, hint  # what is there against what was asked; what to do

    def __str__(self) -> str:
        return f"{self.mismatch}; {self.hint}"
