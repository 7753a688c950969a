"""The ``anomaly`` command line: the parser (``main``), its commands and the HTML reports."""
