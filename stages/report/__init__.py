"""``plc report`` and ``plc inspect``: runs as records (``runs``), the tables (``tables``),
label quality (``labels``), statistics (``stats``), figures (``plot``); ``stage.run`` writes
the report, ``inspect.run`` the per-image panels."""
