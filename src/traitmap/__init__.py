"""traitmap: if I fine-tune on dataset A, what happens to my model on tasks B, C, D — and why?

    >>> from traitmap import Study
    >>> study = Study.load("runs/quickstart")
    >>> study.matrix, study.gains, study.pca, study.records(task="gsm8k")
"""

from traitmap.errors import TraitmapError

__all__ = ["Study", "TraitmapError"]


def __getattr__(name):
    # Study pulls in pandas and the store; keep `import traitmap` itself light.
    if name == "Study":
        from traitmap.results import Study

        return Study
    raise AttributeError(name)
