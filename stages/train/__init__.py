"""``plc train-teacher`` and ``plc train-assistant`` (``teacher``, ``assistant``), the training
check every trained network passes (``checks``) and the segmenter-training helpers they and
distill share (``common``)."""
