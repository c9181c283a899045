"""The Feast repo of leadscore: declarative definitions only, no I/O.

The store's configuration (``feature_store.yaml``) is rendered from the settings into the
runtime repo directory by ``leadscore features apply``, so the same definitions run on
SQLite/files and on Redis/PostgreSQL.
"""
