"""Evaluations: model replies to a dataset scored by graders, runs compared side by side."""
