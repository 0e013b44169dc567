"""One evaluated example: the row a cell stores per example, and the part an export keeps.

The store's records table, the jobs that build records, the export's scores.csv.gz and
the findings that read them all take their columns from here.
"""

from typing import TypedDict


class Record(TypedDict):
    model: str
    seed: int            # the adapter's training seed; -1 for the base model
    task: str
    example_id: str
    prompt: str
    output: str
    output_tokens: int
    parsed: str          # the answer read from the output; "" when none could be read
    gold: str
    correct: float       # 1.0 right, 0.0 wrong
    logprobs: str        # JSON of each choice label's log-probability; "" on generate targets


RECORD_FIELDS = tuple(Record.__annotations__)
SCORE_FIELDS = ("model", "seed", "task", "example_id", "correct", "parsed", "gold")  # what an export keeps (scores.csv.gz)
