"""Model bundles on disk: what a bundle holds (``format``), loading and saving it (``bundle``)
and the checks that loading one never runs code from it (``integrity``)."""
