"""Trainers by name (`[train] trainer`): "module:function", imported when a job needs it.

A leaf module, so that the study file's validation and the jobs that train read one table.
"""

TRAINERS = {"peft": "traitmap.train:train_adapter"}
