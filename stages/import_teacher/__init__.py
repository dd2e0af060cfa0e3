"""``plc import-teacher``: a folder of a teacher's probability maps → an imported teacher."""
