"""``plc prepare``: read a raw dataset (``readers/``), check every file, assign folds, write the
dataset store. ``stage.run`` is the command; ``config`` its options."""
