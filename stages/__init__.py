"""Pipeline stages and the ``plc`` command-line app: one sub-package per stage, the shared
plumbing at the top. Imports go downward only (a sub-package may use the top modules and,
where a stage reuses another's piece, that piece; nothing at the top imports a sub-package
except ``cli``, lazily, by name): ``tests/stages/test_layout.py`` checks there is no circle.

Sub-packages (one line each):

- ``prepare/``    raw layouts (``readers/``) → checked, resized dataset store; folds.
- ``import_teacher/`` a folder of a teacher's probability maps (nnU-Net v2, arrays, PNGs)
                  → the imported teacher T (checked, resampled as prepare resized images).
- ``train/``      teacher and assistants (FIG, BT), the training check, L_Seg training helpers,
                  the epoch-end training state (``--resume``) every training stage keeps.
- ``precompute/`` the team, shard tasks in process or on Dask, the write queue → label store.
- ``distill/``    the student: loader over the stores, live labels, paired-design digests.
- ``report/``     runs as records, tables, label quality, statistics, figures; ``plc inspect``.

Top modules:

- ``cli``       the ``plc`` app, built from the configs (torch-free: ``plc --help`` is fast).
- ``options``   one field, one option: the ``option()`` metadata and the command builder.
- ``configs``   the options several stages share, ``TrainOptions``, ``plc evaluate``'s config.
- ``records``   a stage's config as JSON and the "same config, nothing to do" check.
- ``data``      dataset-store views: splits, batches, label stores opened beside their data.
- ``evaluate``  Dice / IoU / HD95 / ASSD of any checkpoint on any split (``plc evaluate``).
- ``paths``     the conventional paths (data/, models/, labels/, runs/).
- ``outputs``   writable-output checks; ``errors`` the one-line error; ``progress`` bars.
- ``locks``     one output, one writer: ``<output>.lock`` held while a stage runs.
"""
