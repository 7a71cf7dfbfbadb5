"""Record schemas: the single definition of every field the product reads or writes.

Parsing, cleaning, the Parquet schemas and the model feature columns are all derived from the
field lists in :mod:`schemas.records` and :mod:`schemas.outputs`; change a field there and every
stage follows.
"""
