"""``plc precompute``: the team at inference (``team``), one shard task (``shard``), in process
or on Dask (``dask_run``), encoded and written behind a queue (``writeback``); ``stage.run``
drives the two passes and publishes the label store."""
