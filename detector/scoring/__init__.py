"""Features -> scores -> decisions: the scoring graph and the one scoring function
(``scores``), the distance to normal rows (``neighbours``), calibrated thresholds and p-values
(``threshold``) and detection metrics against labels (``evaluation``)."""
