"""Tables in and out: reading CSV and Parquet files whole or in chunks with a ledger of every
record (``sources``), writing outputs atomically (``writers``), and the threads that overlap
reading, scoring and writing (``threads``)."""
