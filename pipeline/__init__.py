"""PLC-KD method: networks, FIG, BT, cascade, SC search, losses, metrics, training."""
