"""Record schemas: the single definition of every field the product reads or writes.

Parsing, cleaning, the Parquet schemas and the model feature columns are all derived from the
field lists in :mod:`schemas.records` and :mod:`schemas.outputs`; change a field there and every
stage follows. Each stream's behaviour (payload kind, event time, identity, label, join key) is
on its :class:`schemas.records.RecordSchema`; the output layout (folders, file names, finished
files) is :mod:`schemas.layout`.
"""
