"""Stores: each main record's collection, owned by one module.

A store alone declares its collection and indexes, names its record's fields (a ``TypedDict``:
the documents pymongo reads and writes, typed, with no conversion on the way), and holds every
query and every guarded update of it. The rules (who may do what, which state may move where,
who is told) stay in ``caiyun.domain``, which hands a store what a move expects and where it
goes; a store never decides. The conditional single-document updates the stores run are the
concurrency design: a move that finds its record no longer in the expected state changes nothing
and returns None.
"""
