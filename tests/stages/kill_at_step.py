"""A ``plc`` process that SIGKILLs itself at a chosen optimizer step: a kill -9 in the middle
of an epoch, at a point the caller picks (the resume tests and benchmarks/bench_resume.py).

Run ``python -c SCRIPT <arguments>`` (what follows ``plc`` on a command line) with
``PLC_KILL_AT_STEP=K`` in the environment: the process dies when ``fit`` is about to take
step K (0-based, counted over the whole run).
"""

ENV = "PLC_KILL_AT_STEP"
SCRIPT = f"""
import os, signal
import pipeline.train as train
take_step = train._train_step
def step_or_die(loop, *args):
    if loop.global_step == int(os.environ[{ENV!r}]):
        os.kill(os.getpid(), signal.SIGKILL)
    return take_step(loop, *args)
train._train_step = step_or_die
from stages.cli import app
app(prog_name="plc")
"""
