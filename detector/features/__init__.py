"""Records -> model features: the schema learned from the training rows (``schema``), the
encoding of tables (``encode``) and of single records given as mappings (``records``), and
what the encoding hands the scorer (``encoded``)."""
