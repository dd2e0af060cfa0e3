"""``plc distill``: the student's loader over the stores (``loader``), live team labels
(``live``), the paired-design digests (``pairing``); ``stage.run`` trains and evaluates."""
