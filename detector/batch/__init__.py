"""Scoring files: chunk by chunk on one machine (``files``), or with Spark (``spark``,
``spark_scoring``), with a ledger of every row (``ledger``)."""
