"""Jobs over whole data sets, built on the inference core: ``score`` (RMScore)."""
